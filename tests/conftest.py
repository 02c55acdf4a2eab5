"""Shared fixtures: an isolated Hamiltonian cache per test session, built problems, GPU gating."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # as `make test`: OpenMP threads stall when another process holds a core


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["NQS_CACHE_DIR"] = str(tmp_path_factory.mktemp("hamiltonian-cache"))
    yield


@pytest.fixture(scope="session")
def problems():
    """Build each catalogue molecule once per session: problems("LiH")."""
    from nqs.molecules import resolve_molecule
    from nqs.problem import build_problem

    built = {}

    def get(name: str, **overrides):
        key = (name, tuple(sorted(overrides.items())))
        if key not in built:
            built[key] = build_problem(resolve_molecule(name, **overrides))
        return built[key]

    return get


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA is not available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


SHORT_RUN_GRID = {"mol": ("LiH", "H2O"), "d_model": (4, 8), "unique": (40, 160)}
SHORT_RUN_STEPS = 20


@pytest.fixture(scope="session")
def short_runs(tmp_path_factory, _isolated_cache):
    """Real tiny `nqs.training.run.run` runs, one per point of SHORT_RUN_GRID (Transformer, d_ff = 4 d_model,
    phase_hidden = 2 d_model, SHORT_RUN_STEPS steps, N_s = 1e12 so the caps bind): their run directories
    (config.yaml, metrics.jsonl, summary.json), for the cost-model and scaling-fit tests."""
    import itertools
    import warnings

    from nqs.training.config import TrainConfig
    from nqs.training.run import run

    root = tmp_path_factory.mktemp("short-runs")
    base = TrainConfig().updated(ansatz="transformer", heads=2, layers=1, phase_layers=2, steps=SHORT_RUN_STEPS,
                                 samples=1e12, warmup=5, anneal_steps=10, final_samples=1e4, final_unique=100,
                                 checkpoint_every=10**6, progress=False, seed=0)
    dirs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notices about an idle dataloader and the logger
        for mol, d, cap in itertools.product(*SHORT_RUN_GRID.values()):
            out = root / f"{mol}-dm{d}-B{cap}"
            run(base.updated(mol=mol, d_model=d, d_ff=4 * d, phase_hidden=2 * d, unique=cap, out=str(out)), out=out)
            dirs.append(out)
    return dirs
