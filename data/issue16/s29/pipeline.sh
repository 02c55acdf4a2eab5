# session 29: H16 from nothing to an exact energy on the DMRG determinants, in stages that a rerun skips once done.
#   fit    the MADE (HIDDEN / PHASE wide) fitted to the DMRG state for FIT seconds (data/issue16/s22/cap22.sh; it
#          builds the Hamiltonian, the DMRG reference and the DMRG state first, ~10 min of one core, all cached)
#   build  H on the DMRG determinants with |c| >= 2e-5 (673,231), PARTS row parts, JOBS processes side by side
#          (~9 min of one core in all; 4.1 GiB on disk)
#   it     projected imaginary time from the fit for IT seconds (scripts/imaginary_time_fit.py, tau 0.2)
#   exact  the network's exact energy on all of S (1,256,549 determinants), in JOBS parts side by side
#   pack   the refit's weights (no Adam moments, ~5 MB) to WEIGHTS, for --init-from or the refit later
# Resume: a stage whose output exists is skipped (checked on session 29's runs, whose stages ran by hand as these
# commands); a refit killed midway is resumed (--resume, session 31; before: restarted from its lowest refresh,
# checked in session 30); FROM=WEIGHTS.ckpt
# starts the fit from saved weights.
#   NAME=s29 FIT=4500 IT=2400 JOBS=2 bash data/issue16/s29/pipeline.sh
set -eu
NAME=${NAME:-s29}; FIT=${FIT:-4500}; IT=${IT:-2400}; JOBS=${JOBS:-2}; PARTS=${PARTS:-4}; HIDDEN=${HIDDEN:-1024}
PHASE=${PHASE:-256}; LR=${LR:-1.5e-3}; LR_FINAL=${LR_FINAL:-3e-5}; DEVICE=${DEVICE:-cpu}
FIT_RUN=runs/s22/cap-$NAME; IT_RUN=runs/s29/$NAME-it; MATRIX=${MATRIX:-runs/s29/h2e-5}
WEIGHTS=${WEIGHTS:-runs/s29/$NAME-weights.ckpt}; PY=".venv/bin/python"; export OMP_NUM_THREADS=1
THRESHOLDS="1e-5 2e-5 5e-5 1e-4 2e-4 5e-4 1e-3"  # |c| cut-offs of the exact energies on S
mkdir -p runs/s22 runs/s29
stamp() { echo "$(date -u +%H:%M:%S) $*"; }

if [ ! -f "$FIT_RUN/summary.json" ]; then
  stamp "fit: $FIT s, $HIDDEN / $PHASE, lr $LR -> $LR_FINAL"
  bash data/issue16/s22/cap22.sh "$NAME" --hidden "$HIDDEN" --phase-hidden "$PHASE" ${FROM:+--init-from "$FROM"} \
    --init-steps 10000000 --init-max-time "$FIT" --init-batch 4096 --init-lr "$LR" --init-lr-final "$LR_FINAL" \
    --final-unique 2000 --final-tail 8192 --device "$DEVICE"
fi
grep -h "initial state\|NQS" "$FIT_RUN.log" | cut -c1-300

if [ ! -f "$MATRIX/set.json" ] || [ "$(ls "$MATRIX"/h-*-of-"$PARTS".npz 2>/dev/null | wc -l)" -lt "$PARTS" ]; then
  stamp "build: $PARTS parts, $JOBS at a time"
  seq 0 $((PARTS - 1)) | xargs -P "$JOBS" -I{} sh -c "[ -f $MATRIX/h-{}-of-$PARTS.npz ] || $PY \
    scripts/imaginary_time_fit.py $FIT_RUN --matrix-dir $MATRIX --parts $PARTS --build-only --part {}/$PARTS \
    > runs/s29/build-{}.log 2>&1"
fi

START=$FIT_RUN  # a refit killed midway (its record "finished": false) is resumed from its last refresh, or,
if [ -f "$IT_RUN/imaginary_time.json" ] && grep -q '"finished": false' "$IT_RUN/imaginary_time.json"; then
  if [ -f "$IT_RUN/checkpoints/resume.pt" ]; then
    stamp "it: resuming $IT_RUN"
    $PY scripts/imaginary_time_fit.py --resume "$IT_RUN" --device "$DEVICE" >> "$IT_RUN.log" 2>&1
  else  # from before --resume (session 31): restarted from its lowest refresh
    START="$IT_RUN-killed-$(date -u +%s)"; mv "$IT_RUN" "$START"
    if [ -f "$IT_RUN.log" ]; then mv "$IT_RUN.log" "$START.log"; fi
  fi
fi
if [ ! -f "$IT_RUN/imaginary_time.json" ]; then
  stamp "it: $IT s from $START"
  rm -rf "$IT_RUN"
  $PY scripts/imaginary_time_fit.py "$START" --matrix-dir "$MATRIX" --parts "$PARTS" --out "$IT_RUN" \
    --seconds "$IT" --device "$DEVICE" > "$IT_RUN.log" 2>&1  # the script's τ 0.2, lr 1e-4 -> 1e-5, refresh 300
fi
tail -2 "$IT_RUN.log"

if [ ! -f "runs/s29/$NAME-exact.txt" ]; then
  stamp "exact: $JOBS parts"
  seq 0 $((JOBS - 1)) | xargs -P "$JOBS" -I{} sh -c "$PY scripts/support_energy.py $IT_RUN \
    --thresholds $THRESHOLDS --part {}/$JOBS --save runs/s29/$NAME-P{}.npy \
    > runs/s29/$NAME-exact-{}.log 2>&1"
  $PY scripts/support_energy.py "$IT_RUN" --thresholds $THRESHOLDS \
    --combine $(seq -f "runs/s29/$NAME-P%g.npy" 0 $((JOBS - 1))) \
    > "runs/s29/$NAME-exact.txt"
fi
cat "runs/s29/$NAME-exact.txt"

cp "$IT_RUN/checkpoints/last.ckpt" "$WEIGHTS"  # the refit saves the weights alone, as --init-from reads them
stamp "weights: $WEIGHTS"
