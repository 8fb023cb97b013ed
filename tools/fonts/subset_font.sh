#!/usr/bin/env bash
# Makes crates/herd/assets/DejaVuSans-ascii.ttf, the font `herd plot` draws its labels with:
# DejaVu Sans 2.37 (Debian's fonts-dejavu-core) cut to printable ASCII by fontTools, so the
# binary needs no system fonts. Pinned: fonttools==4.60.1.
#   python3 -m venv /tmp/venv-font && /tmp/venv-font/bin/pip install fonttools==4.60.1
#   PYTHON=/tmp/venv-font/bin/python tools/fonts/subset_font.sh [/path/to/DejaVuSans.ttf]
set -euo pipefail
cd "$(dirname "$0")/../.."
src="${1:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}"
"${PYTHON:-python3}" -m fontTools.subset "$src" --unicodes="U+0020-007E" \
  --layout-features='' --no-hinting --desubroutinize \
  --output-file=crates/herd/assets/DejaVuSans-ascii.ttf
ls -l crates/herd/assets/DejaVuSans-ascii.ttf
