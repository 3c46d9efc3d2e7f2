#!/usr/bin/env bash
# Give the demo model its target's reference faces (issue 21; documented, not run in CI): 48 of M030's faces at
# 256 px from his seven expressive clips and the first half of his neutral clip, chosen to cover their poses and
# expressions, a furrowed brow counting against a face (models/references.py SAMPLE_FURROW_COST). SwapModel draws
# the face from them. The neutral half matters: without it every calm plate face was drawn from a frowning or
# grimacing M030. The second half of the neutral clip stays unseen: the benches take
# M030's identity centroid from it (bench/metrics.py M030_UNSEEN).
# Usage, from the repository root: bash resources/demo/build_references.sh [WORK_DIR]
set -euo pipefail
work=${1:-build/demo_model}
media=resources/demo/media
python=${PYTHON:-.venv/bin/python}
doublure=${DOUBLURE:-.venv/bin/doublure}
mkdir -p "$work"
[ -f "$work/M030_front_neutral_part1.mp4" ] || "$python" resources/demo/cut_clip.py \
  "$media/M030_front_neutral_level1_001.mp4" 0.5 "$work/M030_front_neutral_part1.mp4" "$work/M030_front_neutral_heldout.mp4"
[ -f "$work/faceset_M030_refs/index.json" ] || \
  "$doublure" extract $(ls $media/M030_*.mp4 | grep -v neutral) "$work/M030_front_neutral_part1.mp4" \
    --out "$work/faceset_M030_refs" --size 256
"$doublure" references resources/demo/demo_model.dbm --faceset "$work/faceset_M030_refs" --count 48
