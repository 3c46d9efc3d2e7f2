#!/usr/bin/env bash
# Give the demo model its target's reference faces (issue 21; documented, not run in CI): 48 of M030's faces
# from his seven expressive clips at 256 px (the faceset resources/demo/build_detail.sh extracts; M030's neutral
# clip stays unseen), chosen to cover their poses and expressions. SwapModel draws the face from them.
# Usage, from the repository root: bash resources/demo/build_references.sh [WORK_DIR]
set -euo pipefail
work=${1:-build/demo_model}
media=resources/demo/media
doublure=${DOUBLURE:-.venv/bin/doublure}
mkdir -p "$work"
[ -f "$work/faceset_M030_256/index.json" ] || \
  "$doublure" extract $(ls $media/M030_*.mp4 | grep -v neutral) --out "$work/faceset_M030_256" --size 256
"$doublure" references resources/demo/demo_model.dbm --faceset "$work/faceset_M030_256" --count 48
