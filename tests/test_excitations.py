"""Integral-driven connections (nqs.excitations) against the Pauli tables, element by element (float64, 1e-10 Ha),
through every local-energy estimator, and past 62 qubits where they are the only path. The small molecules are
compared with the tables as built; the catalogue up to 30 qubits (slow) with tables built without OpenFermion's
1e-8 truncations, which move NH3's, PH3's and LiCl's elements by up to 3e-7 Ha."""
from __future__ import annotations

import math

import pytest
import torch

from nqs.errors import UserError
from nqs.excitations import IntegralHamiltonian, mean_diagonal
from nqs.exact import amplitude_lookup, fci_state
from nqs.hilbert import Sector
from nqs.keys import pack, unpack
from nqs.local_energy import connections, local_energy
from nqs.local_energy_modes import LocalEnergyMode, estimate
from nqs.molecules import catalogue_names, resolve_molecule
from nqs.operator import CompiledHamiltonian, PauliHamiltonian
from nqs.problem import build_problem

TOL = 1e-10  # Hartree


def _sample(sector: Sector, rows: int) -> torch.Tensor:
    bits = sector.enumerate_bits()
    if bits.shape[0] > rows:
        bits = bits[torch.randperm(bits.shape[0], generator=torch.Generator().manual_seed(0))[:rows]]
    return bits


def exact_tables(problem, monkeypatch) -> CompiledHamiltonian:
    """The problem's Pauli tables rebuilt without OpenFermion's 1e-8 truncations (spinorb_from_spatial's zeroing
    of small integrals, SymbolicOperator.__iadd__'s dropping of strings whose running sum is small), which are
    restored afterwards; the problem's own (cached) tables are left as built."""
    import openfermion.chem.molecular_data as molecular_data
    from openfermion.ops.operators.symbolic_operator import SymbolicOperator

    with monkeypatch.context() as patch:
        patch.setattr(molecular_data, "EQ_TOLERANCE", 0.0)
        patch.setattr(SymbolicOperator, "_issmall", staticmethod(lambda val, tol=0.0: val == 0))
        pauli = PauliHamiltonian.from_integrals(problem.integrals)
    return CompiledHamiltonian(pauli, problem.sector.n_alpha, problem.sector.n_beta)


def assert_same_connections(problem, rows: int = 200, tables: CompiledHamiltonian | None = None) -> None:
    """Same (sample, x') pairs, elements and diagonal within TOL on `rows` configurations of the sector."""
    bits = _sample(problem.sector, rows)
    pauli = connections(tables or problem.compiled(connections="pauli"), bits)
    ints = connections(problem.compiled(connections="integrals"), bits)
    assert (pauli.diagonal - ints.diagonal).abs().max().item() < TOL

    def table(c):
        return {(s, k): e for s, k, e in zip(c.sample.tolist(), map(tuple, c.keys.tolist()), c.element.tolist())}

    a, b = table(pauli), table(ints)
    # a pair in one path only has |H_xx'| at the screening tolerance (1e-12), below TOL: rounding decided it
    assert max(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in a.keys() | b.keys()) < TOL
    assert len(a.keys() ^ b.keys()) <= 0.02 * len(a)
    assert ints.keys.shape == (len(b), 1) and ints.n_pairs_naive == bits.shape[0] * problem.compiled(
        connections="integrals").n_candidates


@pytest.mark.parametrize("name", ["H2", "LiH", "H2O", "H4", "H6", "H8"])
def test_integral_connections_equal_the_pauli_tables(name):
    assert_same_connections(build_problem(resolve_molecule(name), references="hf"))


def test_the_tables_differ_only_by_openfermions_truncation(monkeypatch):
    """NH3 keeps small integrals that OpenFermion truncates: the default tables miss elements of ~1e-7 Ha that
    the integrals give; the untruncated tables agree to TOL."""
    p = build_problem(resolve_molecule("NH3"), references="hf")
    bits = _sample(p.sector, 40)
    default, ints = connections(p.compiled(connections="pauli"), bits), connections(p.compiled("cpu", "integrals"), bits)
    assert ints.sample.numel() > default.sample.numel() and (default.diagonal - ints.diagonal).abs().max() < TOL
    assert_same_connections(p, rows=40, tables=exact_tables(p, monkeypatch))


def _catalogue_up_to_30_qubits():
    from nqs.molecules import resolve_molecule as resolve

    names = [n for n in catalogue_names() if n not in ("H2", "LiH", "H2O")] + ["H10", "H12", "H14"]
    return [n for n in names if _qubits(resolve(n)) <= 30]


def _qubits(spec) -> int:
    from nqs import chem
    from nqs.chem import OrbitalOptions

    return 2 * chem.active_space(chem.build_mole(spec, False), spec, OrbitalOptions())[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", _catalogue_up_to_30_qubits())
def test_integral_connections_equal_the_pauli_tables_on_the_catalogue(name, monkeypatch):
    p = build_problem(resolve_molecule(name), references="hf")
    assert_same_connections(p, rows=100, tables=exact_tables(p, monkeypatch))


def test_chunks_of_samples_and_of_excitations_give_the_same_pairs():
    p = build_problem(resolve_molecule("H6"), references="hf")
    h = p.compiled(connections="integrals")
    bits = _sample(p.sector, 20)
    whole = connections(h, bits)
    for memory in (128 * h.n_candidates * 7, 128 * 400):  # 7 samples per chunk; 400 excitations per block
        part = connections(h, bits, memory_bytes=memory)
        pairs = [dict(zip(zip(c.sample.tolist(), c.keys[:, 0].tolist()), c.element.tolist())) for c in (part, whole)]
        assert pairs[0].keys() == pairs[1].keys()  # GEMM blocking may change the last bits of the values
        assert max(abs(pairs[0][k] - pairs[1][k]) for k in pairs[0]) < 1e-12
        assert (part.diagonal - whole.diagonal).abs().max().item() < 1e-12


@pytest.mark.parametrize("name", ["LiH", "CH2", "O2"])
def test_closed_form_e_inf_equals_the_pauli_trace(name):
    p = build_problem(resolve_molecule(name), references="hf")
    trace = p.pauli.sector_trace(p.sector.n_alpha, p.sector.n_beta) / p.sector.size
    assert abs(mean_diagonal(p.integrals) - trace) < 1e-9 and abs(p.e_inf - trace) < 1e-9


def test_every_estimator_takes_the_integral_connections():
    from nqs.models import ModelConfig, build_model

    p = build_problem(resolve_molecule("LiH"), references="hf,fci")
    hp, hi = p.compiled(connections="pauli"), p.compiled(connections="integrals")
    bits, psi, e_fci = fci_state(p)
    for h in (hp, hi):  # the FCI state's local energy is flat at E_FCI
        e_loc = local_energy(h, bits[psi.abs() > 1e-6], amplitude_lookup(bits, psi)).values
        assert (e_loc.real - e_fci).abs().max().item() < 1e-7
    torch.manual_seed(0)
    model = build_model(ModelConfig(ansatz="transformer", d_model=8, heads=2, layers=1), p.sector).double()
    x = _sample(p.sector, 60)
    log_psi = model.log_psi(x).detach()
    for mode in ("exact-dense", "exact-trie", "sampled", "semi-stochastic"):
        values = [estimate(model, h, x, LocalEnergyMode(mode, threshold=1e-3), torch.Generator().manual_seed(1),
                           log_psi_bits=log_psi).values for h in (hp, hi)]
        if mode == "semi-stochastic":  # the draws see the pairs in another order; the mean is the same estimator
            assert abs(values[0].real.mean() - values[1].real.mean()).item() < 0.05
        else:
            assert (values[0] - values[1]).abs().max().item() < 1e-9, mode


def test_past_62_qubits_a_chain_is_integral_driven():
    p = build_problem(resolve_molecule("H32"), references="hf")  # 64 qubits
    assert p.pauli is None and p.sector.n_qubits == 64 and p.connections() == "integrals"
    assert math.isfinite(p.e_inf) and p.e_inf > p.references.e_hf
    with pytest.raises(UserError, match="--connections pauli needs the Pauli table.*use --connections integrals"):
        p.compiled(connections="pauli")
    h = p.compiled()
    assert isinstance(h, IntegralHamiltonian)
    occ = torch.zeros(1, 64, dtype=torch.uint8)
    occ[0, :32] = 1  # Hartree-Fock: the lowest 16 orbitals doubly occupied
    conn = connections(h, occ)
    assert abs(conn.diagonal.item() - p.references.e_hf) < 1e-8
    moved = unpack(conn.keys, 64)
    assert conn.keys.shape[1] == 2 and bool(p.sector.contains(moved).all())
    changed = (moved ^ occ).sum(1)
    assert set(changed.tolist()) <= {2, 4} and conn.sample.numel() <= h.n_candidates
    singles = conn.element[changed == 2]
    # Brillouin: F_ai = 0 at the converged RHF, to its orbital gradient (6e-8 Ha here at conv_tol 1e-10)
    assert singles.abs().max().item() < 1e-6 if singles.numel() else True
    assert torch.equal(pack(moved), conn.keys)


def test_a_bad_connections_choice_exits_2_with_one_line(capsys):
    from nqs.cli.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--connections", "tables", "--steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "choose one of auto, pauli, integrals" in err[0]


def _sorted_pairs(conn) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 1 + W) rows (sample, key words) in lexicographic order, and their (P,) elements, on the CPU."""
    from nqs.keys import lexsort

    rows = torch.cat([conn.sample[:, None], conn.keys], 1).cpu()
    order = lexsort(rows)
    return rows[order], conn.element.cpu()[order]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["H8", "H32"])
def test_integral_connections_on_cuda_equal_cpu(name):
    """The integral-driven kernel on CUDA: the same pairs, elements and diagonal as on the CPU (H32: 64 qubits,
    two-word keys), in chunks small enough to split the samples."""
    p = build_problem(resolve_molecule(name), references="hf")
    gen = torch.Generator().manual_seed(1)
    bits = torch.zeros(300, p.sector.n_qubits, dtype=torch.uint8)
    for spin, m in ((0, p.sector.n_alpha), (1, p.sector.n_beta)):
        bits[:, spin::2].scatter_(1, torch.rand(300, p.sector.n_orb, generator=gen).argsort(1)[:, :m], 1)
    cpu = connections(p.compiled(connections="integrals"), bits, memory_bytes=2**20)
    gpu = connections(p.compiled("cuda", connections="integrals"), bits.cuda(), memory_bytes=2**20)
    assert gpu.keys.is_cuda and gpu.keys.shape[1] == (2 if name == "H32" else 1)
    assert (cpu.diagonal - gpu.diagonal.cpu()).abs().max().item() < TOL
    (rows_cpu, el_cpu), (rows_gpu, el_gpu) = _sorted_pairs(cpu), _sorted_pairs(gpu)
    assert torch.equal(rows_cpu, rows_gpu) and (el_cpu - el_gpu).abs().max().item() < TOL
