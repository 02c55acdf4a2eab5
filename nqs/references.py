"""Reference energies: which to compute (`--references`), computing the missing ones, and the best one.

Kinds: hf, mp2, ccsd, ccsd_t, fci, dmrg. `--references` takes a comma list of them, `all`, or `auto` (the
command-line default): HF, MP2, CCSD, CCSD(T), FCI when the sector has at most `--fci-max-dets` determinants,
and DMRG only where FCI is skipped, block2 is installed and the active space has at most
DMRG_AUTO_MAX_ORBITALS orbitals. HF is always computed (the SCF gives the orbitals). A kind asked for by
name is computed (FCI still within its cap; DMRG without block2 is a UserError saying how to install it).
`nqs.problem.build_problem`'s own default is CLASSIC, the set it always computed (no optional dependency).

The best reference of a set is the first available of BEST_FIRST (FCI, DMRG, CCSD(T), CCSD, MP2, HF), with
its own uncertainty: 0 for FCI (exact in the basis), DMRG's extrapolation distance, None for the others
(their method error cannot be estimated from the calculation itself).
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Callable

from nqs import chem, dmrg
from nqs.chem import Integrals, References
from nqs.errors import UserError

KINDS = ("hf", "mp2", "ccsd", "ccsd_t", "fci", "dmrg")
LABELS = {"hf": "HF", "mp2": "MP2", "ccsd": "CCSD", "ccsd_t": "CCSD(T)", "fci": "FCI", "dmrg": "DMRG"}
BEST_FIRST = ("fci", "dmrg", "ccsd_t", "ccsd", "mp2", "hf")
ALIASES = {"ccsd(t)": "ccsd_t", "ccsdt": "ccsd_t", "scf": "hf"}
AUTO = "auto"
CLASSIC = "hf,mp2,ccsd,ccsd_t,fci"
# auto mode: DMRG at M = 250 took 4.5 min on one loaded thread for H16 (16 orbitals) and 38 min for N2/6-31G
# (18 orbitals, not converged); larger active spaces (H32: 32) would hold a training run up for hours
DMRG_AUTO_MAX_ORBITALS = 16


@dataclass(frozen=True)
class Selection:
    """The reference kinds asked for; `auto`: the affordable set, decided per problem (module docstring)."""

    kinds: frozenset
    auto: bool = False

    @property
    def text(self) -> str:
        return AUTO if self.auto else ",".join(k for k in KINDS if k in self.kinds)


def parse_references(text: "str | Selection | None") -> Selection:
    """'auto', 'all' or a comma list such as 'hf,ccsd_t,fci,dmrg' -> Selection; UserError for unknown names."""
    if isinstance(text, Selection):
        return text
    words = [ALIASES.get(w.strip().lower(), w.strip().lower()) for w in str(text or "").split(",") if w.strip()]
    if words == [AUTO]:
        return Selection(frozenset(k for k in KINDS if k != "dmrg"), auto=True)
    if words == ["all"]:
        return Selection(frozenset(KINDS))
    bad = [w for w in words if w not in KINDS]
    if bad or not words:
        what = f"unknown reference '{bad[0]}'" if bad else "no reference named"
        raise UserError(f"--references: {what}: give auto, all, or a comma list of {', '.join(KINDS)} "
                        f"(e.g. --references hf,ccsd_t,fci,dmrg)")
    return Selection(frozenset(words) | {"hf"})


def dmrg_decision(sel: Selection, e_fci: float | None, n_orb: int) -> tuple[bool, str | None]:
    """(run DMRG?, why not, in words) for this selection and problem."""
    if not sel.auto:
        return "dmrg" in sel.kinds, None
    if e_fci is not None:
        return False, None
    if n_orb > DMRG_AUTO_MAX_ORBITALS:
        return False, (f"DMRG skipped (--references auto): {n_orb} orbitals > {DMRG_AUTO_MAX_ORBITALS}; ask for it "
                       f"by name, e.g. --references hf,ccsd_t,fci,dmrg (or all)")
    if not dmrg.available():
        return False, f"DMRG skipped: block2 is not installed ({dmrg.INSTALL_HINT})"
    return True, None


def complete(refs: References, ints: Integrals, sel: Selection, fci_max_dets: float, dmrg_max_bond: int,
             scf: Callable[[], tuple], localized: Callable[[], Integrals] | None = None,
             threads: int = 1) -> References:
    """`refs` with the selected references it lacks computed (a cache entry's, or a fresh one with only HF).

    `scf()` returns (mol, mf, frozen orbital indices), called only when a coupled-cluster energy is missing;
    `localized()` the same active space's integrals in localized orbitals, for DMRG (default: `ints`)."""
    notes = list(refs.notes)
    cc = [k for k in ("mp2", "ccsd", "ccsd_t") if k in sel.kinds and getattr(refs, f"e_{k}") is None]
    if cc:
        mol, mf, frozen = scf()
        if mf is None:
            values = dict.fromkeys(("mp2", "ccsd", "ccsd_t"), refs.e_hf)
        else:
            deepest = "ccsd_t" if "ccsd_t" in cc else ("ccsd" if "ccsd" in cc else "mp2")
            values = chem.correlated_references(mol, mf, frozen, notes, deepest)
        refs = dataclasses.replace(refs, **{f"e_{k}": v for k, v in values.items()
                                            if getattr(refs, f"e_{k}") is None and v is not None})
    if "fci" in sel.kinds and refs.e_fci is None:
        notes = [n for n in notes if not n.startswith("FCI skipped")]
        e_fci, s2, _ = chem.fci(ints, fci_max_dets, notes)
        refs = dataclasses.replace(refs, e_fci=e_fci, s2_fci=s2)
    run, _ = dmrg_decision(sel, refs.e_fci, ints.n_orb)
    if run and (refs.e_dmrg is None or (refs.dmrg or {}).get("bond_dim") != dmrg_max_bond):
        print(f"note: DMRG reference: M = {dmrg_max_bond} on {ints.n_orb} orbitals, {threads} thread(s); silent "
              f"until it ends (one core: H16 4 min and H32 23 min at M = 250, H50 63 min at M = 150)",
              file=sys.stderr, flush=True)
        result = dmrg.run_dmrg(localized() if localized else ints, max_bond=dmrg_max_bond, threads=threads)
        where = ", Boys-localized orbitals" if localized else ""
        notes = [n for n in notes if not n.startswith("DMRG")] + [result.describe() + where]
        refs = dataclasses.replace(refs, e_dmrg=result.energy, dmrg=dataclasses.asdict(result))
    return dataclasses.replace(refs, notes=tuple(dict.fromkeys(notes)))


def select(refs: References, sel: Selection, n_orb: int) -> References:
    """The references `sel` asks for (the others None, even when cached: the output does not depend on the
    cache), with notes saying what was left out and why."""
    notes = list(refs.notes)
    cleared = {f"e_{k}": None for k in KINDS[1:5] if k not in sel.kinds}
    if "fci" not in sel.kinds:
        cleared["s2_fci"] = None
        notes = [n for n in notes if not n.startswith("FCI")]
    run, why = dmrg_decision(sel, refs.e_fci, n_orb)
    if not run:
        cleared.update(e_dmrg=None, dmrg=None)
        notes = [n for n in notes if not n.startswith("DMRG")] + ([why] if why else [])
    missing = [LABELS[k] for k in KINDS[1:5] if k not in sel.kinds]
    if missing and not sel.auto:
        notes.append(f"not computed (--references {sel.text}): {', '.join(missing)}")
    return dataclasses.replace(refs, **cleared, notes=tuple(notes))


@dataclass(frozen=True)
class BestReference:
    kind: str  # one of KINDS
    energy: float  # Hartree
    uncertainty: float | None  # Hartree; None where the method's error is unknown (CC, MP2, HF)

    @property
    def label(self) -> str:
        return LABELS[self.kind]


def uncertainty(refs: References, kind: str) -> float | None:
    if kind == "fci":
        return 0.0
    if kind == "dmrg" and refs.dmrg:
        value = refs.dmrg.get("uncertainty")
        return float(value) if value is not None and math.isfinite(value) else None
    return None


def best_reference(refs: References) -> BestReference | None:
    """The most accurate reference available (BEST_FIRST order), None when there is none."""
    for kind in BEST_FIRST:
        energy = getattr(refs, f"e_{kind}")
        if energy is not None:
            return BestReference(kind, float(energy), uncertainty(refs, kind))
    return None
