#!/usr/bin/env bash
# The GPU measurements of issue 15 in one call, for a session that is lent a GPU (at most 570 s by its cuts, so it
# fits the device tool's 600 s per command):
#
#   PYTHONPATH=$PWD bash bench/gpu_round.sh          # PYTHON=... picks the interpreter (default python3)
#
# 1. bench/cuda_check.py: train, resume, eval and extract on CUDA; K seeds stacked against one by one (same numbers);
# 2. bench/ensemble.py: K = 5 seeds stacked against 5 sequential runs (default and paper size), with the operation
#    counts of the default size;
# 3. bench/train.py: train-step and forward rows, old path against new (fp32, TF32, bf16 autocast);
# 4. bench/train.py: interp extract against a forward-only pass (the extraction overhead; 16,384 default-size
#    samples, since at 4,096 reading the files alone took as long as all the forward passes on the H100), then one
#    extraction profiled (where the main thread's time goes on the GPU).
# Each step is cut at its own limit (seconds, after its name below) so that one slow step does not use up the device
# time; each table is also written to $OUT/<step>.txt when OUT is set (the device tool's output folder).
set -uo pipefail
py=${PYTHON:-python3}
out=${OUT:-$(mktemp -d)}

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most $limit s): $*"
    timeout "$limit" "$py" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    tail -n 40 "$out/$name.txt"
    [ "$rc" -eq 0 ] || echo "== $name ended with exit status $rc (124: cut at $limit s)"
}

"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
step cuda_check 120 bench/cuda_check.py
step ensemble_default 90 bench/ensemble.py --device cuda --k 5 --epochs 2 --n-train 1024 --model default --reps 1 --count-ops
step ensemble_paper 120 bench/ensemble.py --device cuda --k 5 --epochs 1 --n-train 512 --model paper --reps 1
step train 150 bench/train.py --device cuda --no-extract --reps 5
step extract 90 bench/train.py --device cuda --phases none --extract-n default=16384,paper=4096 --reps 2 --profile-extract
