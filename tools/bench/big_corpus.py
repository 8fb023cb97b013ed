"""A synthetic corpus of a chosen size for measuring `herd data run`'s memory and throughput
(docs/BENCHMARKS.md (k)): documents of 20-60 lines drawn at random from the Gutenberg books
(so most lines recur far more than 6 times), a menu line in every 3rd document, a verbatim copy
every 50th and a near-copy every 40th, with url and date fields; N MB of JSONL.

    python3 tools/bench/big_corpus.py /tmp/big/in/web.jsonl 2000
"""
import glob, gzip, json, os, random, sys
target = int(sys.argv[2]) * 1_000_000
lines = []
for p in sorted(glob.glob(os.environ.get("HERD_SHARED", "../shared") + "/data/books/gutenberg/*.txt.gz")):
    lines += [l.strip() for l in gzip.open(p, "rt", errors="replace") if len(l.strip()) > 20]
rng = random.Random(1)
written = 0
prev = []
with open(sys.argv[1], "w") as f:
    i = 0
    while written < target:
        if i % 50 == 49 and prev:
            text = prev[-1]
        elif i % 40 == 39 and prev:
            w = prev[-2].split(" "); w[::40] = ["x%d" % rng.randrange(99)] * len(w[::40]); text = " ".join(w)
        else:
            doc = [lines[rng.randrange(len(lines))] for _ in range(rng.randrange(20, 60))]
            if i % 3 == 0:
                doc.insert(0, "Home | About | Contact | Subscribe to our newsletter")
            text = "\n".join(doc)
        prev = (prev + [text])[-2:]
        rec = json.dumps({"text": text, "url": "https://example.org/%d" % (i % 900000), "date": "2024-01-%02d" % (1 + i % 28)}) + "\n"
        f.write(rec); written += len(rec); i += 1
print(i, "docs", written / 1e6, "MB")
