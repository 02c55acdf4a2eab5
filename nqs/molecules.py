"""Molecule specifications: the cited catalogue in `nqs/hamiltonians/*.toml`, custom geometries, validation.

Geometries are in Angstrom. `spin` is 2S = N_alpha - N_beta (PySCF's convention); catalogue files give the
multiplicity 2S + 1. Every problem with the input raises `UserError` with one line saying how to fix it.

Besides one file per molecule, the catalogue holds families (`*.family.toml`): `H_chain.family.toml` makes the
linear hydrogen chains `H4` ... `H50` (even N) with a default spacing that `spacing=` overrides.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, replace
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from nqs.errors import UserError

MIN_DISTANCE_ANGSTROM = 0.1
FAMILY_SUFFIX = ".family.toml"
CHAIN_FILE = "H_chain" + FAMILY_SUFFIX
_CHAIN_NAME = re.compile(r"h(\d+)", re.IGNORECASE)
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _element_charges() -> dict[str, int]:
    from pyscf.data.elements import ELEMENTS

    return {symbol.upper(): z for z, symbol in enumerate(ELEMENTS) if z > 0}


@dataclass(frozen=True)
class MoleculeSpec:
    """Everything that defines the electronic problem before orbitals are chosen."""

    name: str
    atoms: tuple[tuple[str, float, float, float], ...]  # (symbol, x, y, z) in Angstrom
    charge: int = 0
    spin: int = 0  # 2S
    basis: str = "sto-3g"
    source: str = "custom geometry"

    @property
    def nuclear_charge(self) -> int:
        charges = _element_charges()
        return sum(charges[a[0].upper()] for a in self.atoms)

    @property
    def n_electrons(self) -> int:
        return self.nuclear_charge - self.charge

    @property
    def n_alpha(self) -> int:
        return (self.n_electrons + self.spin) // 2

    @property
    def n_beta(self) -> int:
        return (self.n_electrons - self.spin) // 2

    def pyscf_atom(self) -> list:
        return [[s, (x, y, z)] for s, x, y, z in self.atoms]

    def with_overrides(self, charge: int | None = None, spin: int | None = None, basis: str | None = None) -> "MoleculeSpec":
        return replace(self, charge=self.charge if charge is None else charge,
                       spin=self.spin if spin is None else spin, basis=self.basis if basis is None else basis)

    def validate(self) -> "MoleculeSpec":
        """Check elements, distances, and that charge and spin fit the electron count."""
        self.validate_atoms()
        n_e = self.n_electrons
        if n_e < 0:
            raise UserError(f"charge {self.charge:+d} removes more electrons than the molecule's {self.nuclear_charge}: "
                            f"use a charge of at most {self.nuclear_charge}")
        if self.spin < 0 or self.spin > n_e or (n_e - self.spin) % 2:
            parity = "even" if n_e % 2 == 0 else "odd"
            raise UserError(f"spin 2S={self.spin} is impossible with {n_e} electrons: 2S must be {parity} and between "
                            f"0 and {n_e} (e.g. --spin {n_e % 2})")
        return self

    def validate_atoms(self) -> "MoleculeSpec":
        """Known elements, at least one atom, no two atoms closer than MIN_DISTANCE_ANGSTROM."""
        if not self.atoms:
            raise UserError("the geometry has no atoms: give at least one, e.g. --geometry \"H 0 0 0; H 0 0 0.74\"")
        charges = _element_charges()
        for symbol, *_ in self.atoms:
            if symbol.upper() not in charges:
                raise UserError(f"unknown element '{symbol}' in the geometry: use a chemical symbol such as H, Li, O")
        for i, a in enumerate(self.atoms):
            for j in range(i):
                d = math.dist(a[1:], self.atoms[j][1:])
                if d < MIN_DISTANCE_ANGSTROM:
                    raise UserError(f"atoms {j + 1} ({self.atoms[j][0]}) and {i + 1} ({a[0]}) are {d:.3f} Å apart "
                                    f"(closer than {MIN_DISTANCE_ANGSTROM} Å): check the geometry's coordinates and units")
        return self


def catalogue_dir() -> Traversable:
    """The folder of catalogue files: $NQS_HAMILTONIANS, else the package's own `nqs/hamiltonians/`."""
    env = os.environ.get("NQS_HAMILTONIANS")
    if not env:
        return files("nqs") / "hamiltonians"
    if not Path(env).is_dir():
        raise UserError(f"NQS_HAMILTONIANS={env} is not a folder: point it at a folder of catalogue .toml files, "
                        f"or unset it to use the catalogue shipped with the package")
    return Path(env)


def catalogue_names() -> list[str]:
    """Names of the catalogue molecules (file stems), sorted."""
    folder = catalogue_dir()
    return sorted(p.name[:-len(".toml")] for p in folder.iterdir()
                  if p.name.endswith(".toml") and not p.name.endswith(FAMILY_SUFFIX) and p.is_file())


def _chain_family() -> dict | None:
    """The hydrogen-chain family file's contents, None when the catalogue folder has none."""
    path = catalogue_dir() / CHAIN_FILE
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return {**data, "n_min": int(data["n_min"]), "n_max": int(data["n_max"]), "n_step": int(data["n_step"]),
                "spacing": float(data["spacing"])}
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"catalogue file {path} is malformed ({exc}): fix or restore it") from None


def chain_names() -> str:
    """'H4 ... H50 (even N)' for messages, '' without a chain family."""
    fam = _chain_family()
    return "" if fam is None else f"H{fam['n_min']} ... H{fam['n_max']} (N in steps of {fam['n_step']})"


def hydrogen_chain(n: int, spacing: float | None = None) -> MoleculeSpec:
    """Linear H_n along z, equally spaced by `spacing` Å (default: the family file's), centred on the origin."""
    fam = _chain_family()
    if fam is None:
        raise UserError(f"no hydrogen-chain family ({CHAIN_FILE}) in the catalogue folder {catalogue_dir()}: "
                        f"restore it, or give --geometry")
    if not (fam["n_min"] <= n <= fam["n_max"] and (n - fam["n_min"]) % fam["n_step"] == 0):
        raise UserError(f"H{n}: hydrogen chains are {chain_names()}; for another chain give --geometry "
                        f"\"H 0 0 0; H 0 0 1.0; ...\" (with --spin 1 for odd N)")
    r = fam["spacing"] if spacing is None else float(spacing)
    if not math.isfinite(r) or r < MIN_DISTANCE_ANGSTROM:
        raise UserError(f"--spacing {spacing} is not a distance of at least {MIN_DISTANCE_ANGSTROM} Å: "
                        f"give the H-H distance in Å, e.g. --spacing 1.0")
    atoms = tuple(("H", 0.0, 0.0, round((i - (n - 1) / 2) * r, 10)) for i in range(n))
    source = f"{fam['geometry_source']}; R = {r:g} Å" + (" (given)" if spacing is not None else " (default)")
    return MoleculeSpec(name=f"H{n}", atoms=atoms, charge=int(fam.get("charge", 0)),
                        spin=int(fam.get("multiplicity", 1)) - 1, basis=fam.get("basis", "sto-3g"), source=source)


def load_molecule(name: str, spacing: float | None = None) -> MoleculeSpec:
    """A catalogue molecule by name (case-insensitive), e.g. 'N2', 'h2o', or a hydrogen chain 'H16' (`spacing`
    in Å: chains only)."""
    names = {n.lower(): n for n in catalogue_names()}
    chain = _CHAIN_NAME.fullmatch(name)
    if name.lower() not in names and chain and _chain_family() is not None:
        return hydrogen_chain(int(chain.group(1)), spacing)
    if spacing is not None:
        raise UserError(f"--spacing applies to the hydrogen chains {chain_names() or '(none here)'}, not to '{name}': "
                        f"drop --spacing, or give the geometry with --geometry")
    if name.lower() not in names:
        close = difflib.get_close_matches(name.lower(), names, n=3)
        hint = f" (did you mean {', '.join(names[c] for c in close)}?)" if close else ""
        chains = f", a hydrogen chain {chain_names()}" if chain_names() else ""
        raise UserError(f"unknown molecule '{name}'{hint}: choose one of {', '.join(catalogue_names()) or '(none)'}"
                        f"{chains}, or give --geometry / an .xyz file")
    path = catalogue_dir() / f"{names[name.lower()]}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        atoms = tuple((str(a[0]), float(a[1]), float(a[2]), float(a[3])) for a in data["atoms"])
        spec = MoleculeSpec(name=data["name"], atoms=atoms, charge=int(data.get("charge", 0)),
                            spin=int(data.get("multiplicity", 1)) - 1, basis=data.get("basis", "sto-3g"),
                            source=data.get("geometry_source", ""))
    except (tomllib.TOMLDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise UserError(f"catalogue file {path} is malformed ({exc}): fix or restore it") from None
    return spec


def parse_geometry(text: str, name: str = "custom") -> MoleculeSpec:
    """'H 0 0 0; H 0 0 0.74' (Angstrom; atoms separated by ';' or newlines) -> MoleculeSpec."""
    atoms = []
    for k, chunk in enumerate(c.strip() for c in re.split(r"[;\n]", text)):
        if not chunk:
            continue
        parts = chunk.replace(",", " ").split()
        if len(parts) != 4 or not all(re.fullmatch(_FLOAT, p) for p in parts[1:]):
            raise UserError(f"malformed geometry entry {k + 1} '{chunk}': write 'SYMBOL x y z' in Å, "
                            f"atoms separated by ';', e.g. \"H 0 0 0; H 0 0 0.74\"")
        atoms.append((parts[0].capitalize(), *(float(p) for p in parts[1:])))
    return MoleculeSpec(name=name, atoms=tuple(atoms))


def read_xyz(path: str | Path) -> MoleculeSpec:
    """A standard .xyz file: atom count, comment line, then 'SYMBOL x y z' lines in Angstrom."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"geometry file {path} not found: give the path of an existing .xyz file")
    lines = path.read_text().splitlines()
    try:
        count = int(lines[0].strip())
    except (IndexError, ValueError):
        raise UserError(f"{path} is not an .xyz file: the first line must be the number of atoms") from None
    body = [ln for ln in lines[2:] if ln.strip()]
    if len(body) != count:
        raise UserError(f"{path} declares {count} atoms but lists {len(body)}: fix the count on its first line")
    spec = parse_geometry("\n".join(body), name=path.stem)
    return replace(spec, source=f"{path.name}: {lines[1].strip()}" if len(lines) > 1 else path.name)


def resolve_molecule(mol: str | None = None, geometry: str | None = None, charge: int | None = None,
                     spin: int | None = None, basis: str | None = None, spacing: float | None = None) -> MoleculeSpec:
    """One molecule from the command-line flags: a catalogue name, or a geometry string / .xyz path."""
    if (mol is None) == (geometry is None):
        raise UserError("give exactly one of --mol NAME or --geometry \"H 0 0 0; H 0 0 0.74\" (or an .xyz path)")
    if mol is not None:
        spec = load_molecule(mol, spacing)
    elif spacing is not None:
        raise UserError("--spacing applies to the hydrogen chains (--mol H4 ... H50), not to --geometry: drop it")
    elif geometry.strip().lower().endswith(".xyz"):
        spec = read_xyz(geometry.strip())
    else:
        spec = parse_geometry(geometry)
    spec = spec.with_overrides(charge=charge, spin=spin, basis=basis).validate_atoms()
    if spin is None and spec.n_electrons >= 0 and (spec.n_electrons - spec.spin) % 2:
        spec = spec.with_overrides(spin=spec.n_electrons % 2)  # a new charge without --spin: lowest spin
    return spec.validate()
