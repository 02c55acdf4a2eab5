# session 26: what the GPU run (gpu26.sh) carries in .dev/ (git-ignored; `echo /.dev/ >> .git/info/exclude`):
# the H16 cache entries and its DMRG state (compressed), session 25's best weights without Adam's moments, a
# slimmed PySCF 2.14.0 (the image has none; its localisation runs there) and the two scripts. ~35 MB; data/
# (50 MB of archives) is moved aside during the call to stay under the 64 MiB transfer.
#   bash data/issue16/s26/prepare.sh /path/to/pyscf-2.14.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl [RUN]
# (RUN: the MADE 1024 / 256 run whose weights the fits start from; default session 25's best). The wheel:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d /tmp/whl pyscf==2.14.0
set -eu
wheel=$1; run=${2:-runs/s22/cap-s25-w1024-c}; C=${NQS_CACHE_DIR:-$HOME/.cache/nqs-scaling/hamiltonians}
rm -rf .dev && mkdir -p .dev/cache/states
cp -r "$C/58a973d6161750931462124b" "$C/58a973d6161750931462124b-6ffdca3d5754f1cf" .dev/cache/  # H16, canonical and split
C="$C" RUN="$run" .venv/bin/python - <<'PY'
import numpy as np, torch
import os; z = np.load(os.environ["C"] + "/states/dmrg-be8e9d353e41260fc4582e74.npz")
np.savez_compressed(".dev/cache/states/dmrg-be8e9d353e41260fc4582e74.npz", **{k: z[k] for k in z.files})
s = torch.load(os.environ["RUN"] + "/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
torch.save({"state_dict": {k: v for k, v in s["state_dict"].items() if k.startswith("model.")}}, ".dev/w1024.ckpt")
PY
bash data/issue16/s31/slim_pyscf.sh "$wheel" .dev/pyscf-slim.tar.xz
cp data/issue16/s26/gpu26.sh data/issue16/s31/cached.py .dev/  # cached.py: session 26's cached_train.py, generalised
du -sh .dev
