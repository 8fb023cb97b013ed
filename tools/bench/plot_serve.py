"""Plots tools/bench/serve_side_by_side.sh's results: total generated tokens/s, p99 time to
first token and p50 inter-token latency against concurrent streams, one line per server.

    python tools/bench/plot_serve.py serve-bench.jsonl docs/serve-bench.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    source, target = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(source) if line.strip()]
    servers = sorted({r["server"] for r in rows})
    panels = [
        ("tokens_per_second", "generated tokens/s (total)"),
        ("ttft_p99_ms", "time to first token, p99 (ms)"),
        ("itl_p50_ms", "inter-token latency, p50 (ms)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.2))
    for axis, (key, title) in zip(axes, panels):
        for server in servers:
            points = sorted((r["concurrency"], r[key]) for r in rows if r["server"] == server)
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=server)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent streams")
        axis.set_title(title)
        if key.startswith("ttft"):
            axis.set_yscale("log")
        axis.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle("SmolLM2-135M-Instruct Q4_1, 2 threads each, 64 tokens per reply")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
