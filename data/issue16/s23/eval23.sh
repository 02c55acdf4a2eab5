# session 23: the energy of saved weights (a probe's .ckpt or a run directory) with the flags of cap22.sh, no fit
# bash data/issue16/s23/eval23.sh NAME WEIGHTS     e.g.  eval23.sh gap36k runs/s23/gap36k.ckpt
name=$1; weights=$2
OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/nqs-train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
  --dmrg-max-bond 250 --ansatz made --hidden 512 --phase-hidden 256 --phase-input strings --init-from "$weights" \
  --anneal-t0 0 --optimizer adam --lr 1e-12 --lr-final 1e-12 --warmup 0 --steps 1 --final-unique 2000 \
  --final-tail 2048 --threads 1 --out runs/s23/eval-$name > runs/s23/eval-$name.log 2>&1
