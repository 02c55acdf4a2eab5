# session 23: does VMC hold a good fit? Adam at a small rate with stratified steps from the 36,000-step fit
# bash data/issue16/s23/vmc23.sh [extra nqs-train flags]
OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/nqs-train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
  --dmrg-max-bond 250 --ansatz made --hidden 512 --phase-hidden 256 --phase-input strings \
  --local-energy semi-stochastic --init-from runs/s22/cap-s23-36k-cos --anneal-t0 0 --optimizer adam --lr 3e-5 \
  --lr-final 3e-6 --warmup 0 --tail 2048 --steps 400 --max-time 2000 --final-unique 2000 --final-tail 2048 \
  --eval-chunk 16384 --checkpoint-every 25 --threads 1 --no-progress "$@" --out runs/s23/vmc-adam3e-5 \
  > runs/s23/vmc-adam3e-5.log 2>&1
