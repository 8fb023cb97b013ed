"""PyTorch peer for `herd pretrain` throughput: the same Llama shape, batch and optimizer with
HF transformers' LlamaForCausalLM on the CPU (f32, sdpa attention, AdamW, clipping at 1.0).

    python tools/bench/train_peer.py --shape tiny --threads 2 --steps 20

Prints one JSON line: tokens/s over the timed steps (3 warm-up steps excluded), and the
estimated MFU with the FLOP count herd uses (6 per matmul parameter + attention's
12 · layers · seq · dim per token). Pinned versions: tools/bench/requirements-train.txt.
"""
import argparse
import json
import time

import torch
import transformers

SHAPES = {
    # name: (layers, dim, heads, kv heads, ffn, vocab, seq, rows)
    "tiny": (4, 256, 4, 2, 768, 8192, 256, 8),
    "small": (8, 512, 8, 2, 1536, 32768, 512, 4),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=SHAPES, default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--peak-gflops", type=float, default=178.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers, dim, heads, kv, ffn, vocab, seq, rows = SHAPES[args.shape]
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=dim, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=dim // heads,
        max_position_embeddings=seq, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )
    model = transformers.LlamaForCausalLM(config).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    n_matmul = sum(p.numel() for n, p in model.named_parameters()
                   if p.dim() == 2 and "embed_tokens" not in n)
    flops_per_token = 6 * n_matmul + 12 * layers * seq * dim
    times = []
    for step in range(args.steps + 3):
        ids = torch.randint(0, vocab, (rows, seq))
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 3:
            times.append(time.perf_counter() - started)
    tokens_per_s = rows * seq * len(times) / sum(times)
    print(json.dumps({
        "peer": "pytorch", "shape": args.shape, "threads": args.threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": round(tokens_per_s * flops_per_token / (args.peak_gflops * 1e9), 3),
    }))


if __name__ == "__main__":
    main()
