#!/usr/bin/env bash
# A second target, for the references at more than 256 px (issue 21; documented, not run in CI, not bundled):
# actors/s32 (a woman filmed at 1280x720, her face about 280 px across the crop) cut in two, the first 70% of its
# frames her reference faces, the last 30% kept unseen for bench/swap_detail.py's --target-clip. Her model starts
# from the demo model and trains 10 minutes against a plate side of six people, then gets her 41 faces as
# references. Usage, from the repository root: bash resources/demo/build_s32.sh [WORK_DIR]
set -euo pipefail
work=${1:-build/s32}
media=../shared/media
general=${GENERAL:-build/general}      # the plate-side facesets resources/demo/build_general.sh extracts
python=${PYTHON:-.venv/bin/python}
doublure=${DOUBLURE:-.venv/bin/doublure}
mkdir -p "$work"
[ -f "$work/s32_heldout.mp4" ] || "$python" resources/demo/cut_clip.py "$media/actors/s32.mp4" 0.7 \
  "$work/s32_train.mp4" "$work/s32_heldout.mp4"
[ -f "$work/fs_s32/index.json" ] || "$doublure" extract "$work/s32_train.mp4" --out "$work/fs_s32" --size 320
"$doublure" train --from resources/demo/demo_model.dbm --target "$work/fs_s32" \
  --source "$general/fs_W009" "$general/fs_d3" "$general/fs_d6" "$general/fs_d10" "$general/fs_d11" "$general/fs_d14" \
  --out "$work/s32.dbm" --minutes 10 --lr 3e-4 --batch 8 --warmup 50 \
  --rights-subject "actors/s32 (stock footage, bench only)" --rights-consent-by "none: third-party stock, research test" \
  --rights-consent-date 2026-12-07 --rights-agreement "../shared/media/SOURCES.md" --rights-uses research \
  --rights-expiry 2027-12-31 --name "s32 (bench)"
echo "model written to $work/s32.dbm; measure: .venv/bin/python bench/swap_detail.py --model $work/s32.dbm \
--target-clip $work/s32_heldout.mp4 --plates people/d0.mp4 people/d12.mp4 actors/s18.mp4 actors/s29.mp4"
