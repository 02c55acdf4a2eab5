# session 22: SR at a third of the rate (0.003) from the 6,000-step strings fit (cap22.sh strings6k), 2,400 s
OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/nqs-train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
    --dmrg-max-bond 250 --ansatz made --hidden 512 --phase-hidden 256 --phase-input strings --local-energy semi-stochastic \
    --init-from runs/s22/cap-strings6k --anneal-t0 0 --optimizer sr --sr-lr 0.003 --lr-final 0.0003 --lr-schedule wsd --decay 0.25 \
    --sr-shift 1e-3 --sr-shift-final 1e-3 --sr-momentum 0.5 --sr-rows 512 --sr-tail 32 --sr-max-leak 1e-4 \
    --sr-max-distance 0.1 --tail 2048 --steps 600 --max-time 2400 --final-unique 8000 --final-tail 4096 \
    --eval-chunk 16384 --checkpoint-every 25 --final-weights lowest --threads 1 --no-progress --out runs/s22/h16-strings6k-lr3e-3
