#!/usr/bin/env python3
"""Curation side by side: herd (`herd data run`) and datatrove on the same inputs, one core each.

(a) web pages → text: the 588 pages of ../shared/data/web/trafilatura-eval written as one
    gzipped WARC file (one `response` record per page, its evaluation URL, a fixed date), then
    datatrove:  WarcReader → Trafilatura(favour_precision) → LanguageFilter(en, 0.65)
                → GopherRepetitionFilter → GopherQualityFilter → PIIFormatter → JsonlWriter
    herd:       extract → langid(en, 0.65) → gopher_repetition → gopher_quality → pii
    Both use fastText's lid.176.ftz (datatrove's FT176LID pointed at the local file; it would
    download lid.176.bin).
(b) MinHash de-duplication on the Gutenberg books (../shared/data/books/gutenberg), cut at line
    breaks into documents of ≥ 4,000 characters; every 4th document is added again with one word
    in 40 changed (a near-duplicate) and every 10th verbatim. datatrove's four MinHash stages
    (signatures, buckets, clusters, filter; 5-grams, 14 × 8) against herd's `minhash` stage
    with the same shape.

Each side runs as its own process on one worker (`LocalPipelineExecutor(tasks=1, workers=1)`;
`herd --threads 1`); wall time includes start-up. Documents/s and MB/s are of the input.

    python3 -m venv /work/venv-dt
    /work/venv-dt/bin/pip install "datatrove[processing]==0.10.1" spacy==3.8.7 warcio==1.7.5 \
        lxml_html_clean==0.4.6
    cargo build --release -p herd && target/release/herd fetch lid.176.ftz
    /work/venv-dt/bin/python tools/bench/datatrove_side_by_side.py [--work /tmp/dtbench]
"""

import argparse
import glob
import gzip
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time

SHARED = os.environ.get("HERD_SHARED", "../shared")
ASSETS = os.environ.get("HERD_ASSETS", os.path.expanduser("~/.cache/herd-assets"))
LID = os.path.join(ASSETS, "fasttext/lid.176.ftz")
HERD = os.environ.get("HERD", "target/release/herd")


def warc_record(url: str, html: bytes) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
    head = (
        "WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
        "WARC-Record-ID: <urn:uuid:{:032x}>\r\nContent-Type: application/http; msgtype=response\r\n"
        "WARC-Identified-Payload-Type: text/html\r\n"
        "Content-Length: {}\r\n\r\n"
    ).format(url, abs(hash(url)), len(http))
    return head.encode() + http + b"\r\n\r\n"


def make_inputs(work: str) -> dict:
    os.makedirs(f"{work}/web", exist_ok=True)
    os.makedirs(f"{work}/books", exist_ok=True)
    root = f"{SHARED}/data/web/trafilatura-eval"
    evaldata = json.load(gzip.open(f"{root}/evaldata.json.gz"))
    html_bytes = 0
    with open(f"{work}/web/pages.warc.gz", "wb") as out:
        for url, entry in sorted(evaldata.items()):
            html = gzip.open(f"{root}/{entry['file']}").read()
            html_bytes += len(html)
            out.write(gzip.compress(warc_record(url, html)))  # one gzip member per record
    docs = []
    for path in sorted(glob.glob(f"{SHARED}/data/books/gutenberg/*")):
        text = (gzip.open(path) if path.endswith(".gz") else open(path, "rb")).read().decode("utf-8", "replace")
        piece = ""
        for line in text.splitlines(keepends=True):
            piece += line
            if len(piece) >= 4000 and line.strip() == "":
                docs.append(piece)
                piece = ""
        if piece.strip():
            docs.append(piece)
    rng = random.Random(0)
    records = []
    for i, d in enumerate(docs):
        records.append(d)
        if i % 4 == 0:
            words = d.split(" ")
            for j in range(0, len(words), 40):
                words[j] = "changed%d" % rng.randrange(1000)
            records.append(" ".join(words))
        if i % 10 == 0:
            records.append(d)
    with open(f"{work}/books/books.jsonl", "w") as f:
        for i, r in enumerate(records):
            f.write(json.dumps({"id": str(i), "text": r}) + "\n")
    return {
        "web": (len(evaldata), html_bytes),
        "books": (len(records), sum(len(r.encode()) for r in records), len(docs)),
    }


def timed(cmd: list, **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - start


DATATROVE_WEB = r'''
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import LanguageFilter, GopherRepetitionFilter, GopherQualityFilter
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.lid import FT176LID
from fasttext.FastText import _FastText

class LocalFT176(FT176LID):
    @property
    def model(self):
        if self._model is None:
            self._model = _FastText(sys.argv[3])
        return self._model

language = LanguageFilter(languages=["en"], language_threshold=0.65)
language.model = LocalFT176(["en"])
LocalPipelineExecutor(pipeline=[
    WarcReader(sys.argv[1]),
    Trafilatura(favour_precision=True),
    language,
    GopherRepetitionFilter(),
    GopherQualityFilter(),
    PIIFormatter(),
    JsonlWriter(sys.argv[2]),
], tasks=1, workers=1, logging_dir=sys.argv[2] + "-logs").run()
'''

DATATROVE_MINHASH = r'''
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupSignature, MinhashDedupBuckets,
    MinhashDedupCluster, MinhashDedupFilter)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

data, out = sys.argv[1], sys.argv[2]
config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
run = lambda steps, name, tasks=1: LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=1,
                                                        logging_dir=f"{out}/logs/{name}").run()
run([JsonlReader(data), MinhashDedupSignature(output_folder=f"{out}/sigs", config=config)], "sigs")
run([MinhashDedupBuckets(input_folder=f"{out}/sigs", output_folder=f"{out}/buckets", config=config)], "buckets",
    tasks=config.num_buckets)  # one task per band, run one after the other
run([MinhashDedupCluster(input_folder=f"{out}/buckets", output_folder=f"{out}/ids", config=config)], "cluster")
run([JsonlReader(data), MinhashDedupFilter(input_folder=f"{out}/ids"), JsonlWriter(f"{out}/kept")], "filter")
'''

HERD_HEAD = """[input]
paths = ["{work}/{task}"]
[output]
dir = "{out}"
"""

HERD_STAGES = {
    "web": """[[stages]]
kind = "extract"
[[stages]]
kind = "langid"
model = "{lid}"
languages = ["en"]
min_prob = 0.65
[[stages]]
kind = "gopher_repetition"
[[stages]]
kind = "gopher_quality"
[[stages]]
kind = "pii"
""",
    "books": """[[stages]]
kind = "minhash"
ngram = 5
bands = 14
rows = 8
""",
}


def count_jsonl(folder: str) -> int:
    n = 0
    for path in glob.glob(f"{folder}/**/*.jsonl*", recursive=True):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            n += sum(1 for _ in f)
    return n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/dtbench")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the best is reported")
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    sizes = make_inputs(work)
    import datatrove  # noqa: F401  (the version is printed below)
    from importlib.metadata import version

    print(f"datatrove {version('datatrove')}, trafilatura {version('trafilatura')}, spacy {version('spacy')}; "
          f"herd {subprocess.run([HERD, '--version'], capture_output=True, text=True).stdout.strip()}")
    results = []
    for task, (n_docs, n_bytes, *_) in sizes.items():
        best = {}
        for r in range(args.repeat):
            for side in ["datatrove", "herd"]:
                out = f"{work}/{task}-{side}-{r}"
                if side == "datatrove":
                    script = DATATROVE_WEB if task == "web" else DATATROVE_MINHASH
                    data = f"{work}/web/pages.warc.gz" if task == "web" else f"{work}/books"
                    cmd = [sys.executable, "-c", script, data, out, LID]
                    seconds = timed(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    kept = count_jsonl(out if task == "web" else f"{out}/kept")
                else:
                    recipe = (HERD_HEAD + HERD_STAGES[task]).format(work=work, task=task, out=out, lid=LID)
                    path = f"{work}/{task}.toml"
                    with open(path, "w") as f:
                        f.write(recipe)
                    seconds = timed([HERD, "--threads", "1", "data", "run", path], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
                    kept = count_jsonl(f"{out}/docs")
                if side not in best or seconds < best[side][0]:
                    best[side] = (seconds, kept)
        for side, (seconds, kept) in best.items():
            results.append((task, side, n_docs, n_bytes, seconds, kept))
        ratio = best["datatrove"][0] / best["herd"][0]
        print(f"{task}: herd is {ratio:.1f}x datatrove (one core each)")
    print("| task | tool | docs in | MB in | seconds | docs/s | MB/s | docs kept |")
    print("|---|---|---|---|---|---|---|---|")
    for task, side, n_docs, n_bytes, seconds, kept in results:
        print(f"| {task} | {side} | {n_docs} | {n_bytes / 1e6:.1f} | {seconds:.2f} | {n_docs / seconds:.0f} | "
              f"{n_bytes / 1e6 / seconds:.2f} | {kept} |")
    if "books" in sizes:
        print(f"books: {sizes['books'][2]} distinct documents before the added copies")


if __name__ == "__main__":
    main()
