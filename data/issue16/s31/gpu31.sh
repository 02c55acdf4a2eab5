# session 31: H16's refit by projected imaginary time on one GPU, from .dev/run (prepare31.sh); results in OUT.
#   1. H on the DMRG determinants with |c| >= THRESHOLD (2e-5: 673,231, 5.5e8 elements, 4.1 GiB) built in PARTS
#      row parts side by side on the machine's cores (~400 s of one core in all on the CPU of session 28);
#   2. the refit on DEVICE with H beside it (scripts/imaginary_time_fit.py, tau 0.2, lr 1e-4 -> 1e-5, refresh
#      300), batches of BATCH, for SECONDS_IT, from .dev/run's weights;
#   3. OUT: machine.txt, build.log, it.log, imaginary_time.json and weights.ckpt (the lowest refresh, ~5 MB; also
#      when the refit is cut short: it writes them as it goes).
# Through the device tool: `bash data/issue16/s31/prepare31.sh; mv data /tmp/data-aside`, then run
# `OUT=$OUT SECONDS_IT=360 bash .dev/gpu31.sh` with carry [".dev"] and timeout 600, then `mv /tmp/data-aside data`.
# A dry run on the CPU (a small set, |c| >= 1e-3), as in session 31:
#   PATH=$PWD/.venv/bin:$PATH OUT=/tmp/gpu31 DEVICE=cpu THRESHOLD=1e-3 SECONDS_IT=30 PARTS=2 bash .dev/gpu31.sh
set -u
OUT=${OUT:-/tmp/gpu31}; DEVICE=${DEVICE:-cuda}; SECONDS_IT=${SECONDS_IT:-360}; BATCH=${BATCH:-16384}
THRESHOLD=${THRESHOLD:-2e-5}; PARTS=${PARTS:-16}; WORK=${WORK:-/tmp/gpu31-work}
rm -rf "$WORK" && mkdir -p "$OUT" "$WORK" /tmp/site
tar xJf .dev/pyscf-slim.tar.xz -C /tmp/site || exit 2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NQS_CACHE_DIR=$PWD/.dev/cache NQS_BLOCK2_VERSION=0.5.4
export OMP_NUM_THREADS=1
{ date -u; nproc --all; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/machine.txt"
IT=(python3 .dev/cached.py scripts/imaginary_time_fit.py .dev/run --threshold "$THRESHOLD" --matrix-dir "$WORK/h"
    --parts "$PARTS")
start=$(date +%s)
seq 0 $((PARTS - 1)) | xargs -P "$PARTS" -I{} "${IT[@]}" --build-only --part {}/"$PARTS" > "$OUT/build.log" 2>&1
echo "build: rc $?, $(($(date +%s) - start)) s" >> "$OUT/build.log"
timeout $((SECONDS_IT + 240)) "${IT[@]}" --out "$WORK/it" --seconds "$SECONDS_IT" --batch "$BATCH" \
  --device "$DEVICE" --threads 4 --symmetrize > "$OUT/it.log" 2>&1  # Pψ: session 33
echo "refit: rc $?, $(($(date +%s) - start)) s in all" >> "$OUT/it.log"
cp "$WORK/it/imaginary_time.json" "$OUT/" && cp "$WORK/it/checkpoints/last.ckpt" "$OUT/weights.ckpt"
tail -1 "$OUT/build.log"; grep -v '^{"step"' "$OUT/it.log" | cut -c1-600; grep '^{"step"' "$OUT/it.log" | cut -c1-150 | tail -4
