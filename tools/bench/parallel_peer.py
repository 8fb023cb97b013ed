#!/usr/bin/env python3
"""PyTorch peer for tools/bench/parallel.py: the recipe's Llama shape, batch and optimizer with
HF transformers' LlamaForCausalLM on the CPU (f32, sdpa attention, AdamW, clipping at 1.0), in
one process or data parallel over gloo — DDP (gradients all-reduced, every rank the whole
optimizer state) or FSDP2 with `reshard_after_forward=False` (gradients reduce-scattered,
optimizer state sharded: ZeRO-2, what herd's DP is).

    python tools/bench/parallel_peer.py --recipe tools/bench/recipes/parallel.toml \
        [--layouts 1,ddp2,fsdp2] [--steps 10]

Every rank gets cores/ranks threads; a step is the recipe's first stage (batch_rows ×
seq_len, micro-batches of micro_batch_rows rows accumulated), random tokens. Prints one JSON
line per layout: the mean time of steps 4–10 and each rank's peak resident memory. Pinned
versions: tools/bench/requirements-train.txt.
"""
import argparse
import json
import os
import resource
import socket
import time
import tomllib

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import transformers


def model_of(recipe):
    m = recipe["model"]
    config = transformers.LlamaConfig(
        vocab_size=m["vocab_size"], hidden_size=m["dim"], intermediate_size=m["ffn_dim"],
        num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
        num_key_value_heads=m["n_kv_heads"], head_dim=m["head_dim"],
        max_position_embeddings=m["max_seq_len"], rope_theta=m["rope_theta"],
        rms_norm_eps=m["norm_eps"], tie_word_embeddings=m["tie_embeddings"],
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).float().train()


def rank_main(rank, ranks, kind, recipe, steps, threads, port, results):
    torch.set_num_threads(threads)
    if ranks > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=ranks)
    model = model_of(recipe)
    if kind == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    elif kind == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh("cpu", (ranks,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh, reshard_after_forward=False)
        fully_shard(model, mesh=mesh, reshard_after_forward=False)
    o = recipe["optimizer"]
    opt = torch.optim.AdamW(model.parameters(), lr=o["peak_lr"], betas=(o["beta1"], o["beta2"]),
                            eps=o["eps"], weight_decay=o["weight_decay"])
    stage = recipe["training"]["stages"][0]
    rows, seq = stage["batch_rows"] // ranks, stage["seq_len"]
    micro = recipe["training"]["micro_batch_rows"]
    vocab = recipe["model"]["vocab_size"]
    generator = torch.Generator().manual_seed(rank)
    times = []
    for step in range(steps):
        ids = torch.randint(0, vocab, (rows, seq), generator=generator)
        started = time.perf_counter()
        chunks = list(ids.split(micro))
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            if kind == "ddp" and not last:
                with model.no_sync():
                    (model(input_ids=chunk, labels=chunk).loss / len(chunks)).backward()
            else:
                if kind == "fsdp":
                    model.set_requires_gradient_sync(last)
                (model(input_ids=chunk, labels=chunk).loss / len(chunks)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 3:
            times.append(time.perf_counter() - started)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put((rank, sum(times) / len(times), peak_mib))
    if ranks > 1:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", required=True)
    p.add_argument("--layouts", default="1,ddp2,fsdp2")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    with open(args.recipe, "rb") as f:
        recipe = tomllib.load(f)
    cores = os.cpu_count()
    for layout in args.layouts.split(","):
        kind, ranks = ("one", 1) if layout == "1" else (layout[:-1], int(layout[-1]))
        threads = max(1, cores // ranks)
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        port = free_port()
        procs = [ctx.Process(target=rank_main,
                             args=(r, ranks, kind, recipe, args.steps, threads, port, results))
                 for r in range(ranks)]
        for proc in procs:
            proc.start()
        got = sorted(results.get() for _ in procs)
        for proc in procs:
            proc.join()
        print(json.dumps({
            "peer": "pytorch", "layout": layout, "ranks": ranks, "threads_per_rank": threads,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "step_s": round(max(t for _, t, _ in got), 4),
            "peak_rss_mib": [round(m, 1) for _, _, m in got],
        }), flush=True)


if __name__ == "__main__":
    main()
