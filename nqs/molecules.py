"""Molecule specifications: the cited catalogue in `nqs/hamiltonians/*.toml`, custom geometries, validation.

Geometries are in Angstrom. `spin` is 2S = N_alpha - N_beta (PySCF's convention); catalogue files give the
multiplicity 2S + 1. Every problem with the input raises `UserError` with one line saying how to fix it.
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
    return sorted(p.name[:-len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file())


def load_molecule(name: str) -> MoleculeSpec:
    """A catalogue molecule by name (case-insensitive), e.g. 'N2', 'h2o'."""
    names = {n.lower(): n for n in catalogue_names()}
    if name.lower() not in names:
        close = difflib.get_close_matches(name.lower(), names, n=3)
        hint = f" (did you mean {', '.join(names[c] for c in close)}?)" if close else ""
        raise UserError(f"unknown molecule '{name}'{hint}: choose one of {', '.join(catalogue_names()) or '(none)'}, "
                        f"or give --geometry / an .xyz file")
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
                     spin: int | None = None, basis: str | None = None) -> MoleculeSpec:
    """One molecule from the command-line flags: a catalogue name, or a geometry string / .xyz path."""
    if (mol is None) == (geometry is None):
        raise UserError("give exactly one of --mol NAME or --geometry \"H 0 0 0; H 0 0 0.74\" (or an .xyz path)")
    if mol is not None:
        spec = load_molecule(mol)
    elif geometry.strip().lower().endswith(".xyz"):
        spec = read_xyz(geometry.strip())
    else:
        spec = parse_geometry(geometry)
    spec = spec.with_overrides(charge=charge, spin=spin, basis=basis).validate_atoms()
    if spin is None and spec.n_electrons >= 0 and (spec.n_electrons - spec.spin) % 2:
        spec = spec.with_overrides(spin=spec.n_electrons % 2)  # a new charge without --spin: lowest spin
    return spec.validate()
