#!/usr/bin/env bash
# Rebuild the demo identity model from the bundled MEAD clips (documented, not run in CI).
# M030 is the target identity (B), W009 the plate actor (A). M030's neutral clip stays unseen for the quality
# check. Usage, from the repository root: [START=bundled] [WARP_UNTIL=0.7] bash resources/demo/build_model.sh
# [MINUTES] [WORK_DIR].
# Run it again to continue: it resumes the checkpoint in WORK_DIR (weights, optimiser, iteration), so hours of
# background training can be spent in sessions of any length. With START=bundled and no checkpoint in WORK_DIR it
# continues the bundled model instead of starting from scratch (its iteration count goes on; the optimiser state,
# which is not shipped, starts fresh with a warm-up). Each session trains with the random warp for its
# first 70% (WARP_UNTIL) and without it for the rest. The bundled model's history (iterations, batch, learning rate per
# session) is in bench/RESULTS.md; from the second session on it trains batch 8 at lr 3e-4 (twice the updates per
# CPU-minute of the first session's batch 16 at 1e-4); from the third on it draws faces evened out by expression
# (--balance-expressions: M030's few wide-open mouths were too rare for the swap to open as wide as W009's); from
# the eleventh on W009's expression travels in the code the swap reads (`doublure train`'s default for liae,
# --shared-expression: her blinks had been kept in her own half of the code, out of the swap's reach).
set -euo pipefail
minutes=${1:-70}
work=${2:-build/demo_model}
media=resources/demo/media
mkdir -p "$work"
doublure=${DOUBLURE:-.venv/bin/doublure}
"$doublure" extract $(ls $media/M030_*.mp4 | grep -v neutral) --out "$work/faceset_M030" --size 128
"$doublure" extract $media/W009_*.mp4 --out "$work/faceset_W009" --size 128
resume=()
if [ ! -f "$work/demo_model.dbm/model.json" ] && [ "${START:-scratch}" = bundled ]; then
  cp -r resources/demo/demo_model.dbm "$work/demo_model.dbm"
fi
[ -f "$work/demo_model.dbm/model.json" ] && resume=(--resume)
"$doublure" train --target "$work/faceset_M030" --source "$work/faceset_W009" --out "$work/demo_model.dbm" \
  --res 64 --arch liae --width 0.3 --batch 8 --lr 3e-4 --warp-until "${WARP_UNTIL:-0.7}" --balance-expressions \
  --minutes "$minutes" \
  --checkpoint-minutes 10 "${resume[@]}" \
  --name "MEAD M030 demo" \
  --rights-subject "MEAD actor M030" \
  --rights-consent-by "MEAD participants, consent collected by the MEAD authors (Wang et al., ECCV 2020)" \
  --rights-consent-date 2020-08-23 \
  --rights-agreement "MEAD dataset terms: research use only; clips via ali-vilab/dreamtalk (MIT)" \
  --rights-uses "research,demonstration" \
  --rights-expiry 2030-12-31
echo "model written to $work/demo_model.dbm; copy it to resources/demo/demo_model.dbm"
