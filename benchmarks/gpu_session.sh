#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md in one call, within a time budget: the CelebA-sized procedural set and
# its caches (64 and 128 px), the benchmark (resident encode and its ingredients, training, profile; then end to end
# against the common pipeline), a torchrun + NCCL training and fitting run, and the demo at CelebA scale.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [BUDGET_SECONDS]        # from the repository root, on the GPU machine
#
# Steps run in order of importance, each under `timeout` with the smaller of its own limit and the time left, so an
# overrun loses the tail, not the whole call. After every step OUT_DIR/results.tgz is rewritten with the logs, the
# benchmark JSONs, the run folders' results and figures (no checkpoints or latents) and the caches' meta.json.
# STEPS picks steps (default: all, in this order; the benchmarks need their data step); sizes can be shrunk for a dry
# run on CPU: N (faces), DEMO_EPOCHS, EVAL_FACES, BENCH_EXTRA (extra benchmark flags). For example, the 64 px steps
# alone, for a budget too short for the NCCL and 128 px steps:
#   STEPS="env data-64 bench-64 bench-64-encode demo-64" bash benchmarks/gpu_session.sh OUT
set -u
OUT=${1:?usage: gpu_session.sh OUT_DIR [BUDGET_SECONDS]}
BUDGET=${2:-570}
N=${N:-202599}
DEMO_EPOCHS=${DEMO_EPOCHS:-4}
EVAL_FACES=${EVAL_FACES:-1000}
BENCH_EXTRA=${BENCH_EXTRA:-}
STEPS=${STEPS:-env data-64 bench-64 nccl-train nccl-fit data-128 bench-128 bench-64-encode demo-64}
FACES=datasets/synthetic-celeba-size  # the synthetic-gpu demo preset's folder, so the demo reuses it
export PYTHONPATH=. PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20 LATENT_EDIT_TRACEBACK=1
START=$(date +%s)
mkdir -p "$OUT" logs
touch logs/.start

collect() {
  find benchmarks -maxdepth 1 -name '*.json' -newer logs/.start > logs/.new-json
  tar -czf "$OUT/results.tgz.tmp" --exclude='*.pt' --exclude='*.npy' --exclude='work' logs runs cache/*/meta.json \
    $(cat logs/.new-json) 2>/dev/null
  mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"
}

step() {  # step NAME MAX_SECONDS COMMAND...
  local name=$1 max=$2
  shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  local left=$((BUDGET - ($(date +%s) - START)))
  local limit=$((max < left ? max : left))
  if ((limit < 20)); then
    echo "$name: skipped, ${left} s of the budget left" | tee -a logs/steps.txt
    return
  fi
  local t0=$(date +%s%N)
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"logs/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc, $(( ($(date +%s%N) - t0) / 1000000 )) ms (limit ${limit} s)" | tee -a logs/steps.txt
  tail -n 4 "logs/$name.log"
  collect
}

step env 30 bash -c 'nvidia-smi; nproc; free -g; df -h .; python3 -c "import torch, torchvision, sklearn, numpy;
print(torch.__version__, torchvision.__version__, sklearn.__version__, numpy.__version__, torch.version.cuda,
torch.backends.cudnn.version(), torch.cuda.is_available() and torch.cuda.get_device_name())"'
nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,clocks.sm --format=csv -l 2 \
  >logs/gpu-utilisation.csv 2>/dev/null &
step data-64 200 python3 -m experiments.prepare_data --generate "$N" --size 64 --synthetic-root $FACES \
  --out cache/synthetic-celeba-size-64
step bench-64 200 python3 -m experiments.benchmark --preset gpu --synthetic-root $FACES --synthetic-images "$N" \
  --reference-cache cache/synthetic-celeba-size-64 --stages resident train profile --repeats 1 $BENCH_EXTRA
step nccl-train 60 python3 -m torch.distributed.run --standalone --nproc-per-node=1 -m experiments.train_vae \
  --cache-dir cache/synthetic-celeba-size-64 --epochs 1 --max-train-images 10000 --batch-size 256 --name nccl
step nccl-fit 60 python3 -m torch.distributed.run --standalone --nproc-per-node=1 -m experiments.fit_directions \
  --methods mean --run-dir "$(ls -d runs/*-nccl | tail -n 1)"
step data-128 60 python3 -m experiments.prepare_data --generate "$N" --size 128 --synthetic-root $FACES \
  --out cache/synthetic-celeba-size-128
step bench-128 90 python3 -m experiments.benchmark --preset gpu --synthetic-root $FACES --synthetic-images "$N" \
  --size 128 --reference-cache cache/synthetic-celeba-size-128 --stages resident profile --repeats 1 $BENCH_EXTRA
step bench-64-encode 110 python3 -m experiments.benchmark --preset gpu --synthetic-root $FACES \
  --synthetic-images "$N" --reference-cache cache/synthetic-celeba-size-64 --stages encode --repeats 1 $BENCH_EXTRA
step demo-64 240 python3 -m experiments.demo --generate "$N" --epochs "$DEMO_EPOCHS" --eval-faces "$EVAL_FACES"
kill %1 2>/dev/null
collect
cat logs/steps.txt
