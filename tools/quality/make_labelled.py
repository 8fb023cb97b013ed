"""Labelled data for the quality-classifier recipe (docs/BENCHMARKS.md (g)): positives are
reference-like text — paragraphs of the Gutenberg books and of the Wikipedia sample
(`herd fetch llamafactory-wiki_demo`) — and negatives are web boilerplate — the `without`
snippets of trafilatura's evaluation pages (navigation, footers, cookie notices, share bars)
and the text of those pages outside their annotated main content. Writes
data/quality/labelled.jsonl ({"label": "hq"|"lq", "text"}). Standard library only.

    python3 tools/quality/make_labelled.py
"""

import gzip
import json
import os
import re

SHARED = "../shared/data"
OUT = "data/quality/labelled.jsonl"


def paragraphs(text, min_chars=200):
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(p.split())
        if len(p) >= min_chars:
            yield p


def main():
    hq, lq = [], []
    books = f"{SHARED}/books/gutenberg"
    for name in sorted(os.listdir(books)):
        if name.startswith("README"):
            continue
        text = gzip.open(f"{books}/{name}").read().decode("utf-8", "replace")
        hq.extend(list(paragraphs(text))[:250])
    wiki = os.path.expanduser("~/.cache/herd-assets/llamafactory/wiki_demo.txt")
    if os.path.exists(wiki):
        hq.extend(p for line in open(wiki, encoding="utf-8") for p in paragraphs(line))
    evaldata = json.load(gzip.open(f"{SHARED}/web/trafilatura-eval/evaldata.json.gz"))
    for entry in evaldata.values():
        lq.extend(" ".join(s.split()) for s in entry.get("without", []) if s.strip())
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for label, texts in (("hq", hq), ("lq", lq)):
            for t in texts:
                f.write(json.dumps({"label": label, "text": t}, ensure_ascii=False) + "\n")
    print(f"{len(hq)} hq, {len(lq)} lq -> {OUT}")


if __name__ == "__main__":
    main()
