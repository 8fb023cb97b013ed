#!/usr/bin/env python3
"""Data parallelism on one machine: per-rank memory and step time against the DP degree.

    python3 tools/bench/data_parallel.py --herd target/release/herd --recipe R.toml \
        [--dp 1,2,4] [--steps 12]

R.toml is a pretraining recipe with its data (paths relative to the working folder) and no
[parallel] section; herd must be built with `--features mpi`. For each DP degree the recipe
runs `--steps` steps (DP 1 in one process, otherwise `mpirun -n DP`), every rank with
cores/DP threads, while each rank's resident memory (VmRSS) is sampled every 20 ms:
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


def run(herd, recipe_text, dp, steps, work, cores):
    recipe = os.path.join(work, f"dp{dp}.toml")
    with open(recipe, "w") as f:
        f.write(recipe_text + (f"\n[parallel]\ndp = {dp}\n" if dp > 1 else ""))
    out = os.path.join(work, f"run-dp{dp}")
    threads = max(1, cores // dp)
    command = [herd, "--threads", str(threads), "pretrain", "--recipe", recipe, "--out", out,
               "--max-steps", str(steps), "--quiet"]
    if dp > 1:
        command = ["mpirun", "-n", str(dp), "--oversubscribe", "--bind-to", "none"] + command
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
        raise SystemExit(f"dp {dp} failed:\n{child.stderr.read()}")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))][3:]
    step_s = sum(r["batch_rows"] * r["seq_len"] / r["tokens_per_s"] for r in rows) / len(rows)
    mib = lambda kb: round(kb / 1024, 1)
    return {"dp": dp, "threads_per_rank": threads, "ranks": len(peak),
            "steady_rss_mib": sorted(mib(v) for v in steady.values()),
            "peak_rss_mib": sorted(mib(v) for v in peak.values()),
            "step_s": round(step_s, 4),
            "tokens_per_s": round(rows[0]["batch_rows"] * rows[0]["seq_len"] / step_s, 1),
            "final_loss": rows[-1]["loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--herd", required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--dp", default="1,2,4")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    recipe_text = open(args.recipe).read()
    if "[parallel]" in recipe_text:
        raise SystemExit("give a recipe without [parallel]: the degrees come from --dp")
    cores = os.cpu_count()
    work = tempfile.mkdtemp(prefix="herd-dp-bench-")
    try:
        for dp in (int(d) for d in args.dp.split(",")):
            print(json.dumps(run(args.herd, recipe_text, dp, args.steps, work, cores)),
                  flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
