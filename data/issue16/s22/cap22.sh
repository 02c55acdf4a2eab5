# session 22: fitted DMRG states' energies with the phase MLP on the bits and string parities (cf. s21/capacity)
# bash data/issue16/s22/cap22.sh NAME [nqs-train flags]   e.g.  cap22.sh strings6k --init-steps 6000
name=$1; shift
OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/nqs-train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
  --dmrg-max-bond 250 --ansatz made --hidden 512 --phase-hidden 256 --phase-input strings --init-state dmrg \
  --init-bond 250 --init-cutoff 1e-5 --anneal-t0 0 --optimizer adam --lr 1e-12 --lr-final 1e-12 --warmup 0 \
  --steps 1 --final-unique 2000 --final-tail 2048 --threads 1 "$@" --out runs/s22/cap-$name > runs/s22/cap-$name.log 2>&1
