#!/usr/bin/env python3
"""Reader fixtures written by independent libraries, read back by herd's reader tests.

- `docs.parquet`: pyarrow 22.0.0 (pinned), two row groups (snappy and zstd pages), columns
  text (string), url (string), date (timestamp[ms, UTC]), and a row whose text is null (a bad
  record herd must count, not drop silently).
- `docs.jsonl.zst`: zstandard 0.25.0, three JSON lines with url and date fields.

    pip install pyarrow==22.0.0 zstandard==0.25.0
    python3 tools/reference/reader_fixtures.py crates/herd-data/tests/fixtures
"""

import datetime as dt
import json
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

ROWS = [
    ("First document, in the first row group.", "https://a.example/1", dt.datetime(2023, 1, 2, 3, 4, 5)),
    ("Second document: ünïcödé and emoji 🦙.", "https://a.example/2", dt.datetime(2024, 6, 7, 8, 9, 10)),
    (None, "https://a.example/3", dt.datetime(2024, 1, 1)),
    ("Fourth document, second row group.", None, None),
]


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([
        ("text", pa.string()),
        ("url", pa.string()),
        ("date", pa.timestamp("ms", tz="UTC")),
        ("score", pa.float64()),
    ])
    def table(rows):
        return pa.table({
            "text": [r[0] for r in rows],
            "url": [r[1] for r in rows],
            "date": [r[2].replace(tzinfo=dt.timezone.utc) if r[2] else None for r in rows],
            "score": [float(i) for i, _ in enumerate(rows)],
        }, schema=schema)
    with pq.ParquetWriter(out / "docs.parquet", schema, compression={"text": "snappy", "url": "zstd", "date": "zstd", "score": "snappy"}) as w:
        w.write_table(table(ROWS[:2]))
        w.write_table(table(ROWS[2:]))
    lines = [
        {"text": "zst one", "url": "https://b.example/1", "date": "2023-05-01T00:00:00Z"},
        {"text": "zst two", "url": "https://b.example/2"},
        {"text": "zst three"},
    ]
    data = "".join(json.dumps(l) + "\n" for l in lines).encode()
    (out / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(data))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
