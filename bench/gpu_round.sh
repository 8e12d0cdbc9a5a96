#!/usr/bin/env bash
# The GPU measurements of issue 15 in one call, for a session that is lent a GPU (at most 540 s by its cuts, so it
# fits the device tool's 600 s per command):
#
#   PYTHONPATH=$PWD bash bench/gpu_round.sh                 # every step, in this order
#   PYTHONPATH=$PWD bash bench/gpu_round.sh train extract   # only these steps (a rerun of what failed or was cut)
#
# PYTHON=... picks the interpreter (default python3). The steps, most needed first (the goals: train step >= 1.4x
# the old path, extraction <= 1.1x a forward pass, K = 5 seeds <= 2x one model):
# 1. cuda_check: bench/cuda_check.py: train, resume, eval and extract on CUDA (features resident and streamed, bit
#    for bit); heads of width 10 padded on CUDA against the CPU; K seeds stacked against one by one (same numbers);
# 2. train: bench/train.py: train-step and forward rows, old path against new (fp32, TF32, bf16 autocast);
# 3. ensemble_default: bench/ensemble.py: K = 5 seeds stacked against 5 sequential runs at the default size, with
#    the operation counts;
# 4. extract: bench/train.py: interp extract against a forward-only pass (the extraction overhead; 16,384
#    default-size samples, since at 4,096 reading the files alone took as long as all the forward passes on the
#    H100), then one extraction profiled (where the main thread's time goes on the GPU);
# 5. gpu_steps: bench/gpu_steps.py: steady steps of one model, of K = 5 stacked seeds and of one model replayed as
#    a CUDA graph, both sizes (whole paper-size runs of a short epoch are mostly the K checkpoints' writing).
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

steps=" cuda_check train ensemble_default extract gpu_steps "
for name in "$@"; do
    [[ "$steps" == *" $name "* ]] || { echo "unknown step '$name'; choose from:$steps" >&2; exit 2; }
done
wanted=" $* "
run() {  # run step $1 when no steps were named or it is one of them
    [ "$wanted" = "  " ] || [[ "$wanted" == *" $1 "* ]] || return 0
    step "$@"
}

"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
run cuda_check 120 bench/cuda_check.py
run train 150 bench/train.py --device cuda --no-extract --reps 5
run ensemble_default 90 bench/ensemble.py --device cuda --k 5 --epochs 2 --n-train 1024 --model default --reps 1 --count-ops
run extract 90 bench/train.py --device cuda --phases none --extract-n default=16384,paper=4096 --reps 2 --profile-extract
run gpu_steps 90 bench/gpu_steps.py
