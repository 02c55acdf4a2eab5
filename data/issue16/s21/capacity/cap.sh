# fit-capacity study: MADE variants fitted to H16's DMRG state (split orbitals), the fitted state's energy
run() { name=$1; shift
  OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/nqs-train --mol H16 --orbitals split --references hf,ccsd_t,dmrg \
    --dmrg-max-bond 250 --ansatz made "$@" --init-state dmrg --init-bond 250 --init-cutoff 1e-5 --anneal-t0 0 \
    --optimizer adam --lr 1e-12 --lr-final 1e-12 --warmup 0 --steps 1 --final-unique 2000 --final-tail 2048 \
    --threads 1 --out runs/s21/cap-$name > runs/s21/cap-$name.log 2>&1
}
for spec in "$@"; do
  case $spec in
    h512p256) run $spec --hidden 512 --phase-hidden 256 ;;
    h512p512) run $spec --hidden 512 --phase-hidden 512 ;;
    h512p256l3) run $spec --hidden 512 --phase-hidden 256 --made-layers 3 ;;
    h1024p512) run $spec --hidden 1024 --phase-hidden 512 ;;
    h1024p256) run $spec --hidden 1024 --phase-hidden 256 ;;
    h512p256cos) run $spec --hidden 512 --phase-hidden 256 --init-lr-final 3e-5 ;;
    h512p512cos) run $spec --hidden 512 --phase-hidden 512 --init-lr-final 3e-5 ;;
    h1024p512cos) run $spec --hidden 1024 --phase-hidden 512 --init-lr-final 3e-5 ;;
    h512p256l3cos) run $spec --hidden 512 --phase-hidden 256 --made-layers 3 --init-lr-final 3e-5 ;;
    h512p256s6k) run $spec --hidden 512 --phase-hidden 256 --init-steps 6000 ;;
    h512p512lr1) run $spec --hidden 512 --phase-hidden 512 --init-lr 1e-3 ;;
  esac
done
