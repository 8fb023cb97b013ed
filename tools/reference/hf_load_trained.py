"""Loads a model folder that `herd pretrain` wrote with HF transformers, as is, and prints the
log-probability of each next token of IDS — to compare with `herd score --model DIR --ids IDS`.

    python tools/reference/hf_load_trained.py runs/tiny/final 7936,525,1722,279
    target/release/herd score --model runs/tiny/final --ids 7936,525,1722,279

Pinned peer: torch==2.9.1, transformers==4.57.6 (tools/bench/requirements-train.txt).
"""
import json
import sys

import torch
import transformers


def main():
    folder, ids = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
    model = transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    with torch.no_grad():
        logits = model.eval()(torch.tensor([ids])).logits[0]
    log_probs = torch.log_softmax(logits, -1)
    print(json.dumps([log_probs[i, ids[i + 1]].item() for i in range(len(ids) - 1)]))


if __name__ == "__main__":
    main()
