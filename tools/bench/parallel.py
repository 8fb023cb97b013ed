#!/usr/bin/env python3
"""Parallel training on one machine: per-rank memory and step time against the layout.

    python3 tools/bench/parallel.py --herd target/release/herd --recipe R.toml \
        [--layouts 1,dp2,dp4,tp2,tp2xdp2] [--steps 12]

R.toml is a pretraining recipe with its data (paths relative to the working folder) and no
[parallel] section; herd must be built with `--features mpi`. A layout names its degrees
(`tp2xdp2` is tp = 2, dp = 2; `pp2xv2` pp = 2 with 2 virtual stages per rank; `1` is one
process). For each, the recipe runs `--steps` steps
(one process, or `mpirun -n RANKS`), every rank with cores/RANKS threads, while each rank's
resident memory (VmRSS) is sampled every 20 ms:
`steady` is its largest value before the first checkpoint (training steps only), `peak` its
largest overall (a checkpoint gathers the whole optimizer state). Step time is the mean over
the steps after the first 3 from metrics.jsonl. Prints one JSON line per degree. Writes only
to a temporary folder, deleted at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def herd_pids(root, exe):
    """Processes under `root` (itself included) running `exe`."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo.extend(int(c) for c in f.read().split())
            if os.path.realpath(f"/proc/{pid}/exe") == exe:
                found.append(pid)
        except OSError:
            pass
    return found


def degrees(layout):
    """{"tp": 2, "dp": 2} for "tp2xdp2"; {"pp": 2, "virtual_stages": 2} for "pp2xv2"; {} for
    "1"."""
    if layout == "1":
        return {}
    found = {}
    for part in layout.split("x"):
        key, value = part.rstrip("0123456789"), part.lstrip("abcdefghijklmnopqrstuvwxyz")
        key = {"v": "virtual_stages"}.get(key, key)
        if key not in ("tp", "cp", "pp", "dp", "virtual_stages") or not value.isdigit() \
                or int(value) < 1:
            raise SystemExit(f"bad layout {layout!r}: write e.g. 1, dp2, tp2xdp2, pp2xv2")
        found[key] = int(value)
    return found


def run(herd, recipe_text, layout, steps, work, cores, index):
    parallel = degrees(layout)
    ranks = 1
    for key, degree in parallel.items():
        if key != "virtual_stages":
            ranks *= degree
    recipe = os.path.join(work, f"{index}-{layout}.toml")
    with open(recipe, "w") as f:
        section = "".join(f"{k} = {v}\n" for k, v in parallel.items())
        f.write(recipe_text + (f"\n[parallel]\n{section}" if section else ""))
    out = os.path.join(work, f"run-{index}-{layout}")
    threads = max(1, cores // ranks)
    command = [herd, "--threads", str(threads), "pretrain", "--recipe", recipe, "--out", out,
               "--max-steps", str(steps), "--quiet"]
    if ranks > 1:
        command = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none"] + command
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    steady, peak = {}, {}
    exe = os.path.realpath(herd)
    while child.poll() is None:
        checkpointed = os.path.isdir(os.path.join(out, "checkpoints")) and os.listdir(
            os.path.join(out, "checkpoints"))
        for pid in herd_pids(child.pid, exe):
            kb = rss_kb(pid)
            if kb is None:
                continue
            peak[pid] = max(peak.get(pid, 0), kb)
            if not checkpointed:
                steady[pid] = max(steady.get(pid, 0), kb)
        time.sleep(0.02)
    if child.returncode != 0:
        raise SystemExit(f"{layout} failed:\n{child.stderr.read()}")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))][3:]
    step_s = sum(r["batch_rows"] * r["seq_len"] / r["tokens_per_s"] for r in rows) / len(rows)
    mib = lambda kb: round(kb / 1024, 1)
    return {"layout": layout, "threads_per_rank": threads, "ranks": len(peak),
            "steady_rss_mib": sorted(mib(v) for v in steady.values()),
            "peak_rss_mib": sorted(mib(v) for v in peak.values()),
            "step_s": round(step_s, 4),
            "tokens_per_s": round(rows[0]["batch_rows"] * rows[0]["seq_len"] / step_s, 1),
            "final_loss": rows[-1]["loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--herd", required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--layouts", default="1,dp2,dp4,tp2,tp2xdp2")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    recipe_text = open(args.recipe).read()
    if "[parallel]" in recipe_text:
        raise SystemExit("give a recipe without [parallel]: the degrees come from --layouts")
    cores = os.cpu_count()
    work = tempfile.mkdtemp(prefix="herd-parallel-bench-")
    try:
        for index, layout in enumerate(args.layouts.split(",")):
            result = run(args.herd, recipe_text, layout, args.steps, work, cores, index)
            print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
