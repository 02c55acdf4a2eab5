"""Run `train` (nqs-train) or a script of scripts/ on the GPU image, which has neither OpenFermion nor block2 (PySCF
is carried, slimmed): the Hamiltonian, its references and the DMRG state are read from the carried cache
(NQS_CACHE_DIR), so any import of those two fails loudly. The DMRG state's cache key names block2's version:
NQS_BLOCK2_VERSION gives the version that computed the carried state (0.5.4), so the key still checks the
integrals, M and the cutoff. Session 26's cached_train.py (gpu26.sh: `cached.py train ...`), for any entry point:

    python3 .dev/cached.py scripts/imaginary_time_fit.py RUN --matrix-dir M ...
"""
import importlib.abc
import importlib.metadata
import os
import runpy
import sys


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("openfermion", "block2", "pyblock2"):
            raise ImportError(f"{name} is not installed here: this run reads what it computes from the cache")


sys.meta_path.insert(0, Block())
_version = importlib.metadata.version
importlib.metadata.version = lambda name: (os.environ["NQS_BLOCK2_VERSION"] if name == "block2" else _version(name))
entry, sys.argv = sys.argv[1], sys.argv[1:]
if entry == "train":
    from nqs.cli.train import main

    main(sys.argv[1:])
else:
    runpy.run_path(entry, run_name="__main__")
