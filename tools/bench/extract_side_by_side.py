"""Main-text extraction side by side: herd (`herd data extract --jsonl`) and trafilatura on
trafilatura's evaluation pages (../shared/data/web/trafilatura-eval), scored with trafilatura's
protocol (tests/eval_common.py: whitespace collapsed; `with` snippets found are true positives,
`without` snippets found are false positives), plus pages/s and MB/s of each on one core; then
Mozilla Readability's test pages (../shared/data/web/readability), scored as word overlap with
Readability.js's expected output.

    python -m venv /tmp/tfv && /tmp/tfv/bin/pip install trafilatura==2.3.1 lxml_html_clean==0.4.6
    cargo build --release -p herd
    /tmp/tfv/bin/python tools/bench/extract_side_by_side.py
"""

import collections
import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import lxml.html

import trafilatura  # 2.3.1

ROOT = "../shared/data/web/trafilatura-eval"


def collapse(text):
    return " ".join((text or "").split())


def score(texts, eval_data):
    tp = fn = fp = tn = 0
    for url, entry in eval_data.items():
        text = collapse(texts[entry["file"]])
        for s in entry.get("with", []):
            if collapse(s) in text:
                tp += 1
            else:
                fn += 1
        for s in entry.get("without", []):
            if collapse(s) in text:
                fp += 1
            else:
                tn += 1
    p, r = tp / (tp + fp), tp / (tp + fn)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r), "tp": tp, "fn": fn, "fp": fp, "tn": tn}


def main():
    eval_data = json.load(gzip.open(f"{ROOT}/evaldata.json.gz"))
    files = sorted({e["file"] for e in eval_data.values()})
    pages = {f: gzip.open(f"{ROOT}/{f}").read() for f in files}
    megabytes = sum(len(b) for b in pages.values()) / 1e6

    start = time.perf_counter()
    trafilatura_texts = {f: trafilatura.extract(b, include_comments=False) for f, b in pages.items()}
    trafilatura_s = time.perf_counter() - start

    herd = os.environ.get("HERD", "target/release/herd")
    start = time.perf_counter()
    out = subprocess.run(
        [herd, "--threads", "1", "data", "extract", "--jsonl"] + [f"{ROOT}/{f}" for f in files],
        check=True, capture_output=True, text=True,
    ).stdout
    herd_s = time.perf_counter() - start
    herd_texts = {}
    for line in out.splitlines():
        record = json.loads(line)
        herd_texts[os.path.relpath(record["file"], ROOT)] = record["text"]

    for name, texts, seconds in [("trafilatura 2.3.1", trafilatura_texts, trafilatura_s), ("herd", herd_texts, herd_s)]:
        s = score(texts, eval_data)
        print(f"{name:<18} precision {s['precision']:.3f} recall {s['recall']:.3f} F1 {s['f1']:.3f} "
              f"(tp {s['tp']} fn {s['fn']} fp {s['fp']} tn {s['tn']}) · {len(files) / seconds:.0f} pages/s, "
              f"{megabytes / seconds:.1f} MB/s (1 core, {len(files)} pages, {megabytes:.1f} MB)")
    print(f"speed ratio herd/trafilatura: {trafilatura_s / herd_s:.1f}x", file=sys.stderr)
    readability(herd)


def word_overlap(got, expected):
    g, e = collections.Counter((got or "").split()), collections.Counter(expected.split())
    return sum((g & e).values()), sum(g.values()), sum(e.values())


def readability(herd):
    """Mozilla Readability's test pages: each extractor's text against the text of
    Readability.js's expected.html (tags stripped, text nodes joined by spaces), as bags of
    words summed over the pages — the protocol of crates/herd-data/tests/extraction.rs."""
    pages = collections.defaultdict(dict)
    with tarfile.open("../shared/data/web/readability/test-pages.tar.gz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)
            if member.isfile() and name[1] in ("source.html", "expected.html"):
                pages[name[0]][name[1]] = tar.extractfile(member).read()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, page in enumerate(sorted(pages)):
            path = f"{tmp}/{i:03}.html"
            open(path, "wb").write(pages[page]["source.html"])
            paths.append((page, path))
        out = subprocess.run([herd, "--threads", "1", "data", "extract", "--jsonl"] + [p for _, p in paths],
                             check=True, capture_output=True, text=True).stdout
        page_of = {path: page for page, path in paths}
        herd_texts = {}
        for line in out.splitlines():
            record = json.loads(line)
            herd_texts[page_of[record["file"]]] = record["text"]
    for name, extract in [("trafilatura 2.3.1", lambda p: trafilatura.extract(pages[p]["source.html"], include_comments=False)),
                          ("herd", lambda p: herd_texts[p])]:
        c = g = e = 0
        for page in sorted(pages):
            expected = " ".join(lxml.html.fromstring(pages[page]["expected.html"].decode("utf-8")).itertext())
            dc, dg, de = word_overlap(extract(page), expected)
            c, g, e = c + dc, g + dg, e + de
        p, r = c / g, c / e
        print(f"{name:<18} readability pages ({len(pages)}): word precision {p:.3f} recall {r:.3f} F1 {2 * p * r / (p + r):.3f}")


if __name__ == "__main__":
    main()
