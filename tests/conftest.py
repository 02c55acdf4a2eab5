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
