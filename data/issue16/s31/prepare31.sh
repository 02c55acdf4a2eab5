# session 31: what gpu31.sh (H16's refit by projected imaginary time on one GPU) carries in .dev/ (git-ignored):
# the H16 cache entries and its DMRG state (compressed), a run directory around WEIGHTS (MADE 1024 / 256, split
# orbitals, phase-input strings; no Adam moments), a slimmed PySCF 2.14.0 (the image has none) and the scripts.
# ~40 MB: data/ (65 MB, tracked) is moved aside during the device call to stay under its 64 MiB transfer.
#   bash data/issue16/s31/prepare31.sh [WEIGHTS] [WHEEL]
# WEIGHTS: default the newest committed refit (data/issue16/s35/h16-made1024-it8.ckpt). WHEEL: PySCF 2.14.0's
# manylinux wheel (default /opt/pypi-more/files/...; else `pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux2014_x86_64 -d /tmp/whl pyscf==2.14.0`).
set -eu
weights=${1:-data/issue16/s35/h16-made1024-it8.ckpt}
wheel=${2:-/opt/pypi-more/files/pyscf-2.14.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl}
C=${NQS_CACHE_DIR:-$HOME/.cache/nqs-scaling/hamiltonians}; H=58a973d6161750931462124b  # H16
rm -rf .dev && mkdir -p .dev/cache/states .dev/run/checkpoints
cp -r "$C/$H" "$C/$H-ec09678311ca5b81" .dev/cache/  # canonical and split orbitals
grep -v '^out:' data/issue16/s31/config.yaml > .dev/run/config.yaml
C="$C" W="$weights" .venv/bin/python - <<'PY'
import glob, os
import numpy as np, torch
for f in glob.glob(os.environ["C"] + "/states/dmrg-*.npz"):  # the DMRG state(s) of the cache, compressed
    z = np.load(f)
    np.savez_compressed(".dev/cache/states/" + os.path.basename(f), **{k: z[k] for k in z.files})
s = torch.load(os.environ["W"], map_location="cpu", weights_only=False)
torch.save({"state_dict": {k: v for k, v in s["state_dict"].items() if k.startswith("model.")}},
           ".dev/run/checkpoints/last.ckpt")
PY
bash data/issue16/s31/slim_pyscf.sh "$wheel" .dev/pyscf-slim.tar.xz
cp data/issue16/s31/gpu31.sh data/issue16/s31/cached.py .dev/
du -sh .dev
