"""Reference language-id predictions for herd's fastText reader.

Runs fastText itself (the `fasttext-predict` package: fastText's C++ predict, pinned below) with
lid.176.ftz on the lingua test sentences and writes, per sentence, the top-2 labels and
probabilities: crates/herd-data/tests/fixtures/lid176-lingua.tsv.gz (`label1 prob1 label2 prob2`).

    python -m venv /tmp/ft && /tmp/ft/bin/pip install fasttext-predict==0.9.2.4
    /tmp/ft/bin/python tools/reference/langid_fixture.py \
        ~/.cache/herd-assets/fasttext/lid.176.ftz ../shared/data/langid/lingua-sentences.tsv.gz
"""

import gzip
import sys

import fasttext  # fasttext-predict==0.9.2.4

OUT = "crates/herd-data/tests/fixtures/lid176-lingua.tsv.gz"


def main(model_path: str, sentences_path: str) -> None:
    model = fasttext.load_model(model_path)
    lines = []
    with gzip.open(sentences_path, "rt", encoding="utf-8") as f:
        for line in f:
            _, sentence = line.rstrip("\n").split("\t", 1)
            labels, probs = model.predict(sentence, k=2)
            cells = []
            for label, prob in zip(labels, probs):
                cells += [label, repr(float(prob))]
            lines.append("\t".join(cells))
    with gzip.GzipFile(OUT, "wb", mtime=0) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"{len(lines)} predictions -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
