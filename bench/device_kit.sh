#!/usr/bin/env bash
# The GPU machine's kit (issues 4 and 8): what the lent H200 needs beyond its own image, and the checks it runs.
#
# The device has Python 3.12 with CUDA torch, numpy 2, scipy (built for numpy 2), opencv-python-headless and
# safetensors, but not OpenImageIO, OpenColorIO, PyAV, mediapipe (which needs numpy < 2), colour-science or Dask,
# and it reaches no package index. Their wheels (~150 MB, with a scipy for numpy 1.26 that colour-science imports)
# travel with the working tree (19 MB), at most 64 MiB a call, so they go in four parts, the footage spread
# over them. What a call installs or copies under .gpukit/ (ignored by git) stays on the machine while it is
# warm (30 s after a call), so the calls go back to back; a session has 15 minutes of device time, start
# included (the first session's start took ~30 s, each install call ~5 s).
#
# Here:    bash bench/device_kit.sh pack            # .gpukit/{w1,w2,w3,w4,media}; `pack 3.11` for a rehearsal
# There:   run(command="bash bench/device_kit.sh install w1", carry=[".gpukit/w1", ".gpukit/media/stills",
#                                                              ".gpukit/media/pexels", ".gpukit/media/SOURCES.md"])
#          run(command="bash bench/device_kit.sh install w2",
#              carry=[".gpukit/w2", ".gpukit/media/plates_1080", ".gpukit/media/mead"])
#          run(command="bash bench/device_kit.sh install w4", carry=[".gpukit/w4"])
#          run(command="bash bench/device_kit.sh install w3 && bash bench/device_kit.sh checks env train-graphs \\
#                       1080 farm", carry=[".gpukit/w3", ".gpukit/media/people"], timeout_s=600)
#          (`checks` alone runs env 1080 train infer; `tests 120 tests/test_colour.py ...` some files, 120 s at most)
#
# `checks` runs the GPU goals' benchmarks, each under its own time limit, and leaves each one's log in $OUT
# (bench_*.log): the demo graph's 1080p frames per second (goal >= 48) with an op table and the lines that
# waited for the GPU, training FLOP/s over a bf16 matmul's at 64 and 128 px batch 16 (goal >= 0.5; and the
# step alone, without the loader), inference ms per face at 128-1024 px (goal: 1024 px <= 25 ms). `tests`
# runs the suite but for the Qt app (not installed there) and the Dask farm's tests (longer than a session
# can spare; the farm check runs the farm itself) on CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=.gpukit
SITE=$KIT/site
OUT=${OUT:-$KIT/out}

# The wheels of each part (pip requirement specs), sized so that a part and the tree stay under 64 MiB.
PART_W1=("av==18.1.0")
PART_W2=("mediapipe==0.10.21" "protobuf==4.25.9" "colour-science==0.4.6")
PART_W3=("numpy==1.26.4" "OpenImageIO==3.0.21.0" "opencolorio==2.4.2")
# The farm check's Dask (and what Dask needs that torch does not bring; fsspec and jinja2 come with torch but are
# pinned here in case), beside scipy.
PART_W4=("scipy==1.13.1" "dask==2026.8.0" "distributed==2026.8.0" "cloudpickle==3.1.3" "partd==1.4.2" "toolz==1.2.0"
         "locket==1.0.0" "msgpack==1.2.4" "psutil==7.2.2" "sortedcontainers==2.4.0" "tblib==3.2.2" "tornado==6.6.1"
         "zict==3.0.0" "click==8.5.1" "PyYAML==6.0.4" "packaging==26.4" "fsspec==2026.9.0" "jinja2==3.1.6"
         "MarkupSafe==3.0.4")

pack() {
  local pyver=${1:-3.12}
  rm -rf $KIT/w1 $KIT/w2 $KIT/w3 $KIT/w4 $KIT/media
  for part in w1 w2 w3 w4; do
    local -n specs="PART_${part^^}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d $KIT/$part "${specs[@]}" || return 1
  done
  # The footage: the checks read the 1080p plate and the MEAD clips (facesets for the training bench), the
  # tests all of it, each part carried beside a part of the wheels.
  cp -r ../shared/media $KIT/media && chmod -R u+w $KIT/media || return 1
  local tree
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  for part in "w1 media/stills media/pexels media/SOURCES.md" "w2 media/plates_1080 media/mead" w4 \
              "w3 media/people"; do
    local size=$tree
    for p in $part; do size=$((size + $(du -sb $KIT/$p | cut -f1))); done
    printf '%-8s %5.1f MiB with the tree (limit 64)\n' "$part" "$(echo "$size / 1048576" | bc -l)"
  done
}

install() {
  for part; do
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE \
      $KIT/$part/*.whl || return 1
    echo "installed $part: $(ls $KIT/$part)"
  done
}

# The package without pip (its sub-packages live at the repo's top level), the kit's site first, and the
# footage where the benchmarks and tests look for it (../shared/media).
environment() {
  mkdir -p $KIT/pkg/doublure
  for sub in engine faces models nodes farm app resources; do ln -sfn "$PWD/$sub" $KIT/pkg/doublure/$sub; done
  export PYTHONPATH="$PWD/$SITE:$PWD/$KIT/pkg:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1 GLOG_minloglevel=2
  if [ ! -e ../shared/media ]; then mkdir -p ../shared && ln -sfn "$PWD/$KIT/media" ../shared/media; fi
  mkdir -p "$OUT"
}

# step NAME SECONDS COMMAND...: run one check under its limit, its output on the console and in $OUT/NAME.log.
step() {
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

# checks [NAME...]: the named checks in the order given (default: env 1080 train infer; also train-graphs, the
# training bench with CUDA graphs, and farm, the 1080p render over local clusters of 4 and 8 workers sharing
# the GPU), each under its limit.
checks() {
  environment
  local threads
  threads=$(nproc)
  local names=("$@")
  [ ${#names[@]} -gt 0 ] || names=(env 1080 train infer)
  for name in "${names[@]}"; do
    case $name in
      env) step env 30 bash -c "nvidia-smi -L; python3 -c 'import sys, torch, numpy, cv2, av, OpenImageIO, \
PyOpenColorIO, mediapipe, colour; print(sys.version.split()[0], \"torch\", torch.__version__, \
(torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no CUDA\"), \"numpy\", numpy.__version__, \
\"cv2\", cv2.__version__, \"av\", av.__version__, \"oiio\", OpenImageIO.VERSION_STRING)'" ;;
      infer) step bench_infer 80 python3 bench/infer_speed.py --sizes 128,256,512,1024 --repeats 10 --threads "$threads" ;;
      train) step bench_train 200 python3 bench/train_throughput.py --cases 64:16,128:16 --iters 16 --threads "$threads" ;;
      train-graphs) step bench_train_graphs 200 python3 bench/train_throughput.py --cases 64:16,128:16 --iters 16 \
                      --threads "$threads" --compile-mode reduce-overhead ;;
      1080) step bench_1080 180 python3 bench/speed_1080.py --frames 100 --threads "$threads" --json \
              --work "$PWD/$KIT/speed_1080" --frame-workers 1,4 --op-table "$OUT/ops_1080.txt" ;;
      farm) step bench_farm 300 python3 bench/speed_1080.py --frames 120 --threads 4 --json \
              --work "$PWD/$KIT/speed_1080" --farm-workers 4,8 ;;
      *) echo "unknown check $name" >&2; return 2 ;;
    esac
  done
}

# tests [SECONDS [FILE...]]: the suite (or the files named) but for the Qt app and the farm's tests, on CUDA.
tests() {
  environment
  local limit=${1:-280}
  shift || true
  step tests "$limit" python3 -m pytest -q --timeout 120 -p no:cacheprovider -W ignore::UserWarning \
    --ignore-glob='tests/test_app_*' --ignore=tests/test_farm.py --ignore=tests/test_readme.py "${@:-tests}"
}

command=${1:?usage: device_kit.sh pack [PYVER] | install PART... | checks [NAME...] | tests [SECONDS [FILE...]]}
shift
case $command in
  pack|install|checks|tests) "$command" "$@" ;;
  *) echo "unknown command $command" >&2; exit 2 ;;
esac
