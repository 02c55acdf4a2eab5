# session 24: the energy of saved weights with the flags of cap22.sh (no fit), the tail drawn 8,192 times
# bash data/issue16/s24/eval24.sh NAME WEIGHTS HIDDEN PHASE_HIDDEN [nqs-train flags, e.g. --seed 1]   e.g.  eval24.sh 36k runs/s22/cap-s23-36k-cos 512 256
name=$1; weights=$2; hidden=$3; phase=$4; shift 4
OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/nqs-train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
  --dmrg-max-bond 250 --ansatz made --hidden "$hidden" --phase-hidden "$phase" --phase-input strings \
  --init-from "$weights" --anneal-t0 0 --optimizer adam --lr 1e-12 --lr-final 1e-12 --warmup 0 --steps 1 \
  --final-unique 2000 --final-tail 8192 --threads 1 "$@" --out runs/s24/eval-$name > runs/s24/eval-$name.log 2>&1
