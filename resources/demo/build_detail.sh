#!/usr/bin/env bash
# Train the demo model's detail stage (documented, not run in CI): M030's seven expressive clips extracted at
# 256 px, the faces' native size in these 256x256 frames being about 190 px across the crop, so the stage
# draws the 64 px model's faces at 256 px (scale 4, picked from the faceset). M030's neutral clip stays unseen.
# Usage, from the repository root: bash resources/demo/build_detail.sh [MINUTES] [WORK_DIR]
# It trains the detail stage of WORK_DIR/demo_model.dbm (a copy of the bundled model when there is none) and
# continues a detail stage already there (--resume), so it can be spent in sessions of any length.
set -euo pipefail
minutes=${1:-30}
work=${2:-build/demo_model}
media=resources/demo/media
doublure=${DOUBLURE:-.venv/bin/doublure}
mkdir -p "$work"
[ -f "$work/demo_model.dbm/model.json" ] || cp -r resources/demo/demo_model.dbm "$work/demo_model.dbm"
[ -f "$work/faceset_M030_256/index.json" ] || \
  "$doublure" extract $(ls $media/M030_*.mp4 | grep -v neutral) --out "$work/faceset_M030_256" --size 256
resume=()
grep -q '"detail"' "$work/demo_model.dbm/model.json" && resume=(--resume)
"$doublure" train --detail --out "$work/demo_model.dbm" --target "$work/faceset_M030_256" --minutes "$minutes" \
  --checkpoint-minutes 5 "${resume[@]}"
echo "detail stage trained in $work/demo_model.dbm; copy the folder to resources/demo/demo_model.dbm"
