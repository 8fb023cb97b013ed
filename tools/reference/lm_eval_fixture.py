"""lm-evaluation-harness's answers on herd's task files: the reference `herd eval` is tested
against (crates/herd/tests/eval_vs_lm_eval.rs).

Runs lm_eval 0.4.13's `hf` backend (transformers 4.57.6, torch 2.9.1, CPU, batch size 1) on a
model in float64 — the exact log-likelihoods of the weights, against which herd's float32 is
held (the harness in float32 is itself ~1e-5 per token off, biased, so two float32 runs of the
same weights differ by more than 1e-4 on a 20-token continuation) and writes, per task, every document's requests (context and continuation, or the
prompt), the harness's raw answers (log-likelihood and greedy flag, or the generated text) and
its per-document metrics, plus the aggregated results.

    python3 -m venv /work/venv-eval
    /work/venv-eval/bin/pip install -r tools/reference/requirements-lm-eval.txt
    cd ../shared/data/eval   # the task files' data_files are relative to the working folder
    /work/venv-eval/bin/python /path/to/herd/tools/reference/lm_eval_fixture.py \
        --model ~/.cache/herd-assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out /path/to/herd/crates/herd/tests/fixtures/lm_eval_smollm2.json

    # the model herd pretrains in the test (kept by the test itself), with fewer documents
    HERD_KEEP_EVAL_MODEL=/tmp/pretrained cargo test -p herd --test eval_vs_lm_eval pretrained
    /work/venv-eval/bin/python .../lm_eval_fixture.py --model /tmp/pretrained \
        --runs arc_easy:2:20 lambada_passages:0:10:64 gsm8k_cot:8:3 \
        --out /path/to/herd/crates/herd/tests/fixtures/lm_eval_pretrained.json
    # (the first run of that test fails for want of the fixture it then compares with)

A GGUF file is loaded as transformers does (`gguf_file=`): its quantized weights dequantized,
so herd is compared with `--dequantize`; BOS is added as the file says
(`add_bos_token=False` for SmolLM2, whose GGUF does not ask for it). The runs take a few minutes.
"""

import argparse
import json
import os
import pathlib

# task:num_fewshot:limit[:max_length] — one of each request kind, few-shot draws of both
# samplers, the several-contexts form (winogrande), a description (mmlu), rolling windows
# (lambada_passages with a short max_length, so that passages span several windows), and
# GSM8K's 8-shot chain of thought.
RUNS = [
    "arc_easy:2:25",
    "winogrande:1:20",
    "mmlu:1:20",
    "hellaswag:0:15",
    "boolq:0:10",
    "lambada_openai:0:25",
    "lambada_passages:0:10:64",
    "gsm8k_cot:8:5",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--runs", nargs="+", default=RUNS, help="task:num_fewshot:limit[:max_length] ..."
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    import lm_eval
    import transformers
    from lm_eval.tasks import TaskManager

    tasks_dir = pathlib.Path(__file__).resolve().parents[2] / "tasks"
    manager = TaskManager(include_path=str(tasks_dir))
    model = pathlib.Path(args.model).expanduser()
    if model.suffix == ".gguf":
        # transformers' tokenizer for a GGUF adds BOS whether or not the file asks for it;
        # llama.cpp and herd follow the file (`tokenizer.ggml.add_bos_token`, false or absent
        # here), so the harness is told the same.
        model_args = (
            f"pretrained={model.parent},gguf_file={model.name},dtype=float64,add_bos_token=False"
        )
    else:
        model_args = f"pretrained={model},dtype=float64"

    out = {
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "0.4.13",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model": model.name,
        "tasks": {},
    }
    for run in args.runs:
        task, shots, limit, *rest = run.split(":")
        shots, limit = int(shots), int(limit)
        max_length = int(rest[0]) if rest else None
        extra = f",max_length={max_length}" if max_length else ""
        result = lm_eval.simple_evaluate(
            model="hf",
            model_args=model_args + extra,
            tasks=[task],
            task_manager=manager,
            num_fewshot=shots,
            limit=limit,
            batch_size=1,
            device="cpu",
            log_samples=True,
            bootstrap_iters=100000,
        )
        # The harness logs one sample per document and filter pipeline.
        docs = {}
        for s in result["samples"][task]:
            # One entry per request: [context, continuation], [text] or [prompt, kwargs].
            requests = [list(request) for request in s["arguments"]]
            doc = docs.setdefault(
                s["doc_id"],
                {
                    "doc_id": s["doc_id"],
                    "requests": requests,
                    "resps": [r[0] for r in s["resps"]],
                    "filters": {},
                },
            )
            doc["filters"][s["filter"]] = {
                "filtered_resps": s["filtered_resps"],
                "metrics": {m: s[m] for m in s["metrics"]},
            }
        out["tasks"][task] = {
            "num_fewshot": shots,
            "limit": limit,
            "max_length": max_length,
            "results": result["results"][task],
            "docs": [docs[i] for i in sorted(docs)],
        }
        print(task, {k: v for k, v in result["results"][task].items() if k != "alias"}, flush=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main()
