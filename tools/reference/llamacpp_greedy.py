#!/usr/bin/env python3
"""Greedy-decoding reference fixtures from the llama.cpp peer.

Uses the ctypes bindings shipped in the llama-cpp-python sdist (the
`llama_cpp` package directory of the unpacked sdist) WITHOUT building them:
the package directory is put on sys.path and the bindings are pointed at the
libllama.so built from the sdist's vendored llama.cpp through the
LLAMA_CPP_LIB_PATH environment variable (read in llama_cpp/llama_cpp.py,
passed to load_shared_library() in llama_cpp/_ctypes_extensions.py).

Per prompt: tokenize with llama.cpp's tokenizer (add_special = the GGUF's
add_bos setting, parse_special=false except for the hand-built ChatML prompt),
then decode N tokens greedily: logits of the last position, argmax, no
penalties, no sampler.  Every step records the chosen id, its logit, the
top-5 [id, logit] pairs and the top1-top2 gap.  Decoding does not stop at an
end-of-generation token; `first_eog_step` says where one was first chosen.

Example (see tools/bench/README.md):

    python3 tools/reference/llamacpp_greedy.py \
        --sdist /work/peers/llama_cpp_python-0.3.36 \
        --model /work/peers/models/SmolLM2-135M-Instruct.Q8_0.gguf \
        --out crates/herd-infer/tests/fixtures/llamacpp_smollm2_q8_0.json
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

CHAT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHAT_USER = "What is the capital of France?"
CHAT_PROMPT = (
    "<|im_start|>system\n" + CHAT_SYSTEM + "<|im_end|>\n"
    "<|im_start|>user\n" + CHAT_USER + "<|im_end|>\n"
    "<|im_start|>assistant\n"
)

# (prompt, parse_special)
DEFAULT_PROMPTS = [
    ("The capital of France is", False),
    ("def fibonacci(n):", False),
    ("Once upon a time, in a small village,", False),
    ("The three primary colors are", False),
    (CHAT_PROMPT, True),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="GGUF file")
    p.add_argument("--out", required=True, help="output JSON path ('-' for stdout)")
    p.add_argument(
        "--sdist",
        default=os.environ.get("HERD_LLAMACPP_SDIST", "/work/peers/llama_cpp_python-0.3.36"),
        help="unpacked llama-cpp-python sdist (holds llama_cpp/ and vendor/llama.cpp/)",
    )
    p.add_argument(
        "--lib-dir",
        default=os.environ.get("LLAMA_CPP_LIB_PATH"),
        help="directory holding libllama.so (default: <sdist>/vendor/llama.cpp/build/bin)",
    )
    p.add_argument("--n-predict", type=int, default=32)
    p.add_argument("--n-ctx", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top-k", type=int, default=5, help="how many [id, logit] pairs to record per step")
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="override prompts (parse_special=false); may be repeated",
    )
    p.add_argument(
        "--flash-attn",
        choices=["auto", "on", "off"],
        default="auto",
        help="llama_context_params.flash_attn_type (default: llama.cpp's default, auto)",
    )
    p.add_argument("--verbose", action="store_true", help="echo llama.cpp log to stderr")
    return p.parse_args()


def vendored_commit(sdist: pathlib.Path) -> str | None:
    vendor = sdist / "vendor" / "llama.cpp"
    try:
        out = subprocess.run(
            ["git", "-C", str(vendor), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        if re.fullmatch(r"[0-9a-f]{40}", out):
            return out
    except Exception:
        pass
    # Fall back to the sdist's changelog: "update llama.cpp to ggml-org/llama.cpp@<sha>"
    try:
        text = (sdist / "CHANGELOG.md").read_text()
        m = re.search(r"llama\.cpp@([0-9a-f]{7,40})", text)
        if m:
            return m.group(1)
    except Exception:
        pass
    return None


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    args = parse_args()
    sdist = pathlib.Path(args.sdist).resolve()
    lib_dir = pathlib.Path(args.lib_dir or (sdist / "vendor" / "llama.cpp" / "build" / "bin")).resolve()
    if not (lib_dir / "libllama.so").exists():
        sys.exit(f"libllama.so not found in {lib_dir}; build the peer first (tools/bench/build_llamacpp.sh)")
    if not (sdist / "llama_cpp" / "llama_cpp.py").exists():
        sys.exit(f"{sdist} does not look like an unpacked llama-cpp-python sdist")

    # Point the (unbuilt) bindings at the peer's shared library, then import them.
    os.environ["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    sys.path.insert(0, str(sdist))
    import numpy as np  # noqa: E402
    import llama_cpp  # noqa: E402
    import llama_cpp.llama_cpp as C  # noqa: E402

    loaded = pathlib.Path(C._lib._name).resolve()
    if loaded.parent != lib_dir and lib_dir not in loaded.parents:
        sys.exit(f"bindings loaded {loaded}, expected a library under {lib_dir}")

    log_lines: list[str] = []

    @C.llama_log_callback
    def _log_cb(level, text, user_data):  # noqa: ARG001
        s = text.decode("utf-8", errors="replace") if text else ""
        log_lines.append(s)
        if args.verbose:
            sys.stderr.write(s)

    C.llama_log_set(_log_cb, ctypes.c_void_p(0))
    C.llama_backend_init()

    model_path = pathlib.Path(args.model).resolve()
    mparams = C.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = C.llama_model_load_from_file(str(model_path).encode(), mparams)
    if not model:
        sys.exit(f"failed to load {model_path}")
    vocab = C.llama_model_get_vocab(model)
    n_vocab = C.llama_vocab_n_tokens(vocab)
    add_bos = bool(C.llama_vocab_get_add_bos(vocab))
    add_eos = bool(C.llama_vocab_get_add_eos(vocab))

    def meta(key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = C.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    # Confirm the hand-built ChatML prompt is what the GGUF's chat template renders.
    chat_template = C.llama_model_chat_template(model, None)
    chat_template = chat_template.decode() if chat_template else None
    template_check = None
    if chat_template:
        try:
            import jinja2

            rendered = jinja2.Environment().from_string(chat_template).render(
                messages=[{"role": "user", "content": CHAT_USER}],
                add_generation_prompt=True,
            )
            template_check = rendered == CHAT_PROMPT
            if not template_check:
                print(f"WARNING: chat template renders {rendered!r}, expected {CHAT_PROMPT!r}", file=sys.stderr)
        except ImportError:
            pass

    def tokenize(text: str, parse_special: bool) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(vocab, raw, len(raw), buf, cap, add_bos, parse_special)
        if n < 0:
            cap = -n
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(vocab, raw, len(raw), buf, cap, add_bos, parse_special)
        assert n >= 0
        return list(buf[:n])

    def detokenize(ids: list[int]) -> str:
        arr = (C.llama_token * max(1, len(ids)))(*ids)
        cap = 64 * len(ids) + 16
        out = ctypes.create_string_buffer(cap)
        n = C.llama_detokenize(vocab, arr, len(ids), out, cap, False, True)
        if n < 0:
            cap = -n + 1
            out = ctypes.create_string_buffer(cap)
            n = C.llama_detokenize(vocab, arr, len(ids), out, cap, False, True)
        return out.raw[:n].decode("utf-8", errors="replace")

    cparams = C.llama_context_default_params()
    cparams.n_ctx = args.n_ctx
    cparams.n_batch = args.n_ctx
    cparams.n_ubatch = args.n_ctx
    cparams.n_seq_max = 1
    cparams.n_threads = args.threads
    cparams.n_threads_batch = args.threads
    cparams.no_perf = True
    cparams.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[args.flash_attn]
    fa_names = {-1: "auto", 0: "disabled", 1: "enabled"}
    ctx_info = {
        "n_ctx": cparams.n_ctx,
        "n_batch": cparams.n_batch,
        "n_ubatch": cparams.n_ubatch,
        "n_threads": cparams.n_threads,
        "n_threads_batch": cparams.n_threads_batch,
        "flash_attn_type": fa_names.get(cparams.flash_attn_type, cparams.flash_attn_type),
        "type_k": cparams.type_k,
        "type_v": cparams.type_v,
    }

    if args.prompt:
        prompts = [(p, False) for p in args.prompt]
    else:
        prompts = DEFAULT_PROMPTS

    cases = []
    for prompt, parse_special in prompts:
        ctx = C.llama_init_from_model(model, cparams)
        if not ctx:
            sys.exit("failed to create context")
        prompt_ids = tokenize(prompt, parse_special)
        assert len(prompt_ids) + args.n_predict <= args.n_ctx

        def decode(ids: list[int]) -> np.ndarray:
            arr = (C.llama_token * len(ids))(*ids)
            batch = C.llama_batch_get_one(arr, len(ids))  # only the last position outputs logits
            rc = C.llama_decode(ctx, batch)
            if rc != 0:
                sys.exit(f"llama_decode returned {rc}")
            ptr = C.llama_get_logits_ith(ctx, -1)
            return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32, copy=True)

        steps = []
        generated: list[int] = []
        first_eog = None
        logits = decode(prompt_ids)
        for step in range(args.n_predict):
            order = np.argsort(-logits, kind="stable")  # ties -> lower id first, same as argmax
            top = order[: max(args.top_k, 2)]
            tok = int(np.argmax(logits))
            assert tok == int(top[0])
            steps.append(
                {
                    "id": tok,
                    "logit": float(logits[tok]),
                    "top5": [[int(i), float(logits[i])] for i in top[: args.top_k]],
                    "gap": float(logits[top[0]]) - float(logits[top[1]]),
                }
            )
            generated.append(tok)
            if first_eog is None and C.llama_vocab_is_eog(vocab, tok):
                first_eog = step
            if step + 1 < args.n_predict:
                logits = decode([tok])
        C.llama_free(ctx)

        cases.append(
            {
                "prompt": prompt,
                "parse_special": parse_special,
                "add_bos": add_bos,
                "prompt_ids": prompt_ids,
                "steps": steps,
                "text": detokenize(generated),
                "first_eog_step": first_eog,
                "min_gap_first16": min(s["gap"] for s in steps[:16]),
            }
        )
        print(
            f"[{model_path.name}] {prompt!r} -> {cases[-1]['text']!r} "
            f"(min gap first 16: {cases[-1]['min_gap_first16']:.4f})",
            file=sys.stderr,
        )

    commit = vendored_commit(sdist)
    # How llama.cpp resolved flash_attn_type (auto is resolved by probing at context creation).
    fa_log = [l.strip() for l in log_lines
              if re.search(r"flash_attn\s+=|Flash Attention", l)]
    fa_log = list(dict.fromkeys(fa_log))  # dedupe, keep order
    fa_resolved = "enabled" if any("FLASH_ATTN_EXT" in l for l in log_lines) else "disabled"
    result = {
        "model": model_path.name,
        "sha256": sha256_file(model_path),
        "llama_cpp_version": f"{llama_cpp.__version__} vendored llama.cpp {commit or 'unknown'}",
        "general.file_type": meta("general.file_type"),
        "n_vocab": n_vocab,
        "add_bos": add_bos,
        "add_eos": add_eos,
        "chat_template_matches_prompt": template_check,
        "decoding": {
            "n_predict": args.n_predict,
            "method": "greedy argmax over logits of the last position; no penalties; no stop at EOG",
            "detokenize": {"remove_special": False, "unparse_special": True},
            "context": ctx_info,
            "flash_attn_log": fa_log,
            "flash_attn_resolved": fa_resolved,
        },
        "system_info": C.llama_print_system_info().decode(errors="replace").strip(),
        "cases": cases,
    }
    C.llama_model_free(model)

    text = json.dumps(result, indent=1, ensure_ascii=False) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out} ({len(text.encode())} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
