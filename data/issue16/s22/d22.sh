# session 22: run D of session 21 (SR from the DMRG fit) with the phase MLP reading the Jordan-Wigner string parities
OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/nqs-train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
    --dmrg-max-bond 250 --ansatz made --hidden 512 --phase-hidden 256 --phase-input strings --local-energy semi-stochastic \
    --init-state dmrg --init-bond 250 --init-cutoff 1e-5 --anneal-t0 0 --optimizer sr --sr-lr 0.01 --lr-final 0.001 --lr-schedule wsd --decay 0.25 \
    --sr-shift 1e-3 --sr-shift-final 1e-3 --sr-momentum 0.5 --sr-rows 512 --sr-tail 32 --sr-max-leak 1e-4 \
    --sr-max-distance 0.1 --tail 2048 --steps 600 --max-time 3300 --final-unique 8000 --final-tail 4096 \
    --eval-chunk 16384 --checkpoint-every 25 --final-weights lowest --threads 1 --no-progress --out runs/s22/h16-strings
