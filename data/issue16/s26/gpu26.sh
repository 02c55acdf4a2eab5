# session 26: H16's DMRG fit on one GPU (run from the repository root with .dev/ from prepare.sh; OUT: where the
# results go). Three fits side by side from session 25's best weights (MADE 1024 / 256, +2.90 mHa vs DMRG), each
# for FIT seconds on stratified batches, then each one's final energy (2,000 unique + 8,192 tail draws, exact
# local energy, seed 0) on the GPU:
#   a: 1024 / 256, batches of 16,384;  b: widened to 2048 / 512, batches of 16,384;  c: 2048 / 512, 65,536.
# Each run's weights (no Adam moments) come back as .dev-style .ckpt files in weights.tar, split into 15 MB parts.
#   OUT=/tmp/gpu26 FIT=300 bash data/issue16/s26/gpu26.sh
# Through the device tool: `bash data/issue16/s26/prepare.sh WHEEL [RUN]; mv data /tmp/data-aside`, then run
# `OUT=$OUT FIT=300 bash .dev/gpu26.sh` with carry [".dev"] and timeout 600, then `mv /tmp/data-aside data`.
# (Session 26 prepared and dry-ran this; the device tool had paused its loans, so it has not run on a GPU yet.)
# A dry run on the CPU (fresh networks of 64 / 32 and 128 / 64 units, not session 25's weights):
#   PATH=$PWD/.venv/bin:$PATH DEVICE=cpu FIT=5 UNIQUE=20 TAIL=16 SMALL=1 LIMIT=900 bash data/issue16/s26/gpu26.sh
set -u
OUT=${OUT:-/tmp/gpu26}; RUNS=${RUNS:-/tmp/gpu26-runs}; FIT=${FIT:-300}; DEVICE=${DEVICE:-cuda}
UNIQUE=${UNIQUE:-2000}; TAIL=${TAIL:-8192}; LIMIT=${LIMIT:-$((FIT + 200))}
mkdir -p "$OUT" "$RUNS" /tmp/site
tar xJf .dev/pyscf-slim.tar.xz -C /tmp/site || exit 2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NQS_CACHE_DIR=$PWD/.dev/cache NQS_BLOCK2_VERSION=0.5.4
export OMP_NUM_THREADS=4
{ date -u; nproc --all; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/machine.txt"
INIT=(--init-from .dev/w1024.ckpt); W1=(1024 256); W2=(2048 512)
[ -n "${SMALL:-}" ] && { INIT=(); W1=(64 32); W2=(128 64); }
fit() {  # $1 name, $2 hidden, $3 phase hidden, $4 batch
  timeout "$LIMIT" python3 .dev/cached.py train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
    --dmrg-max-bond 250 --ansatz made --hidden "$2" --phase-hidden "$3" --phase-input strings --init-state dmrg \
    --init-bond 250 --init-cutoff 1e-5 "${INIT[@]}" --init-steps 10000000 --init-max-time "$FIT" \
    --init-batch "$4" --init-lr 1e-3 --init-lr-final 2e-5 --anneal-t0 0 --optimizer adam --lr 1e-12 \
    --lr-final 1e-12 --warmup 0 --steps 1 --final-unique "$UNIQUE" --final-tail "$TAIL" --eval-chunk 65536 \
    --device "$DEVICE" --threads 4 --out "$RUNS/$1" > "$RUNS/$1.log" 2>&1
  echo "$1 rc $?" >> "$RUNS/$1.log"
}
fit a "${W1[@]}" 16384 & fit b "${W2[@]}" 16384 & fit c "${W2[@]}" 65536 &
wait
mkdir -p /tmp/weights
for r in a b c; do
  python3 -c "import sys, torch; s = torch.load(sys.argv[1], map_location='cpu', weights_only=False)
torch.save({'state_dict': {k: v for k, v in s['state_dict'].items() if k.startswith('model.')}}, sys.argv[2])" \
    "$RUNS/$r/checkpoints/last.ckpt" "/tmp/weights/$r.ckpt" 2>> "$OUT/pack.log"
done
tar cf - -C /tmp/weights . | split -b 15M - "$OUT/weights.tar.part-"
tar czf "$OUT/runs.tgz" --exclude='*.ckpt' --exclude='tensorboard' -C "$RUNS" .
for r in a b c; do grep -h -E "initial state|error|NQS|rc " "$RUNS/$r.log" | cut -c1-400; done
for r in a b c; do python3 -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[2], {k: s[k] for k in ('energy', 'energy_err', 'error_mha', 'ref_kind', 'peak_device_gib', 'command_wall_s', 'device')})" "$RUNS/$r/summary.json" $r 2>&1 | tail -1; done
