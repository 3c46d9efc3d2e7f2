#!/usr/bin/env bash
# Continue the demo model (M030) with a plate side of many people, the way ready-to-merge models generalise to
# actors they never saw (issue 21, item 3). Documented, not run in CI; resumable: run it again to go on.
# A (plate side): W009's eight MEAD clips and ten more people of ../shared/media (people/ d3 d6 d9 d10 d11 d13 d14
# d20, actors/ s20 s32), drawn one person as often as another. Kept unseen for the bench: people/ d0 d12,
# actors/ s13 s18 s29; M030's neutral clip. B: M030's seven expressive clips, as for the demo model.
# Usage, from the repository root: bash resources/demo/build_general.sh [MINUTES] [WORK_DIR]
set -euo pipefail
minutes=${1:-60}
work=${2:-build/general}
media=../shared/media
demo=resources/demo/media
doublure=${DOUBLURE:-.venv/bin/doublure}
mkdir -p "$work"
sources=()
for c in d3 d6 d9 d10 d11 d13 d14 d20; do
  [ -f "$work/fs_$c/index.json" ] || "$doublure" extract "$media/people/$c.mp4" --out "$work/fs_$c" --size 128 --every 3
  sources+=("$work/fs_$c")
done
for c in s20 s32; do
  [ -f "$work/fs_$c/index.json" ] || "$doublure" extract "$media/actors/$c.mp4" --out "$work/fs_$c" --size 128 --every 2
  sources+=("$work/fs_$c")
done
[ -f "$work/fs_W009/index.json" ] || "$doublure" extract $demo/W009_*.mp4 --out "$work/fs_W009" --size 128
[ -f "$work/fs_M030/index.json" ] || \
  "$doublure" extract $(ls $demo/M030_*.mp4 | grep -v neutral) --out "$work/fs_M030" --size 128
# the bundled model (with its detail stage, which training carries along) is where it starts
[ -f "$work/general.dbm/model.json" ] || cp -r resources/demo/demo_model.dbm "$work/general.dbm"
"$doublure" train --target "$work/fs_M030" --source "$work/fs_W009" "${sources[@]}" --out "$work/general.dbm" \
  --resume --res 64 --arch liae --width 0.3 --batch 8 --lr 3e-4 --warp-until 0.7 --balance-expressions \
  --minutes "$minutes" --checkpoint-minutes 10
echo "model written to $work/general.dbm; refresh its detail stage with resources/demo/build_detail.sh"
