"""Scan coordinates of a potential-energy curve (distances in Å).

`bond` moves atom 2 of a diatomic along the bond axis; `stretch` moves the atoms bonded to a centre atom
(those within 1.3 times its shortest distance) radially so that the shortest bond is r (a symmetric stretch
when the bonds are equal); `fragment` translates atoms[split:] rigidly so that the two fragments' centroids
are r apart.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from nqs.errors import UserError
from nqs.molecules import MIN_DISTANCE_ANGSTROM, MoleculeSpec

NEIGHBOUR_FACTOR = 1.3  # atoms within this factor of the centre's shortest distance are its bonded neighbours
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_values(text: str) -> tuple[float, ...]:
    """'0.5:3.0:0.1' (start:stop:step, stop included), '0.9,1.1,1.4' or '0.74' -> distances in Å."""
    text = text.strip()
    hint = "write --bond START:STOP:STEP (Å, e.g. 0.5:3.0:0.1), a list 0.9,1.1,1.4, or one value"
    if re.fullmatch(rf"{_FLOAT}:{_FLOAT}:{_FLOAT}", text):
        start, stop, step = (float(v) for v in text.split(":"))
        if step == 0 or (stop - start) * step < 0:
            raise UserError(f"--bond {text}: the step must be non-zero and go from START towards STOP; {hint}")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        if n > 10_000:
            raise UserError(f"--bond {text} asks for {n} points: use a larger step")
        values = tuple(round(start + i * step, 6) for i in range(n))
    elif re.fullmatch(rf"{_FLOAT}(?:\s*,\s*{_FLOAT})*", text):
        values = tuple(float(v) for v in text.split(","))
    else:
        raise UserError(f"malformed --bond '{text}': {hint}")
    if min(values) < MIN_DISTANCE_ANGSTROM:
        raise UserError(f"--bond {text} reaches {min(values):g} Å, below {MIN_DISTANCE_ANGSTROM} Å: start further out")
    names = [point_name(r) for r in values]
    if len(set(names)) != len(names):
        raise UserError(f"--bond {text} repeats a distance (points are named to 0.001 Å): use distinct values")
    return values


def point_name(r: float) -> str:
    return f"r={r:.3f}"


@dataclass(frozen=True)
class Scan:
    """Distances `values` (Å) of one coordinate: `mode` bond | stretch (around atom `centre`, 0-based) |
    fragment (atoms[:split] and atoms[split:])."""

    values: tuple[float, ...]
    mode: str = "bond"
    centre: int | None = None
    split: int | None = None

    def geometry(self, spec: MoleculeSpec, r: float) -> MoleculeSpec:
        """The molecule with its coordinate set to r (Å), validated."""
        pos = [list(a[1:]) for a in spec.atoms]
        if self.mode == "bond":
            pos[1] = _along(pos[0], pos[1], r)
        elif self.mode == "stretch":
            c = pos[self.centre]
            for j in neighbours(spec, self.centre):
                pos[j] = _along(c, pos[j], r * math.dist(c, pos[j]) / _shortest(spec, self.centre))
        else:
            a, b = _centroid(pos[:self.split]), _centroid(pos[self.split:])
            target = _along(a, b, r)
            pos = pos[:self.split] + [[p[i] + target[i] - b[i] for i in range(3)] for p in pos[self.split:]]
        atoms = tuple((a[0], *(round(x, 10) for x in p)) for a, p in zip(spec.atoms, pos))
        return replace(spec, atoms=atoms).validate()

    def record(self, r: float) -> dict:
        """The run record's `scan` entry of the point at r: the coordinate, its value and unit, and what moves
        (`atom`: the 1-based centre of a stretch; `fragment`: K of a fragment separation)."""
        return {"coordinate": "r", "value": r, "unit": "Å", "mode": self.mode,
                "atom": None if self.centre is None else self.centre + 1, "fragment": self.split}


def make_scan(spec: MoleculeSpec, bond: str, atom: str | None = None, fragment: int | None = None) -> Scan:
    """The scan of `spec` asked for by --bond, with --atom CENTRE or --fragment K for polyatomics."""
    values = parse_values(bond)
    n = len(spec.atoms)
    if atom is not None and fragment is not None:
        raise UserError("give at most one of --atom (symmetric stretch) and --fragment (separate two fragments)")
    if fragment is not None:
        if not 1 <= fragment < n:
            raise UserError(f"--fragment {fragment}: the first fragment is atoms 1..K with 1 <= K < {n}")
        scan = Scan(values, "fragment", split=fragment)
    elif atom is not None:
        scan = Scan(values, "stretch", centre=_atom_index(spec, atom))
        if not neighbours(spec, scan.centre):
            raise UserError(f"--atom {atom}: the molecule has no other atom to stretch")
    elif n == 2:
        scan = Scan(values, "bond")
    else:
        raise UserError(f"--bond alone scans a diatomic, and {spec.name} has {n} atoms: add --atom CENTRE for a "
                        f"symmetric stretch of the bonds to CENTRE, or --fragment K to pull atoms K+1.. apart")
    for r in (values[0], values[-1], min(values)):
        scan.geometry(spec, r)  # an impossible geometry fails now, not after hours of training
    return scan


def _atom_index(spec: MoleculeSpec, atom: str) -> int:
    if atom.isdigit():
        index = int(atom) - 1
        if not 0 <= index < len(spec.atoms):
            raise UserError(f"--atom {atom}: atoms are numbered 1..{len(spec.atoms)}")
        return index
    hits = [i for i, a in enumerate(spec.atoms) if a[0].lower() == atom.lower()]
    if len(hits) != 1:
        what = "no atom" if not hits else f"{len(hits)} atoms"
        raise UserError(f"--atom {atom}: {spec.name} has {what} of that element; give the atom's number "
                        f"(1..{len(spec.atoms)})")
    return hits[0]


def neighbours(spec: MoleculeSpec, centre: int) -> list[int]:
    """Atoms bonded to `centre`: within NEIGHBOUR_FACTOR of its shortest distance."""
    if len(spec.atoms) < 2:
        return []
    cut = NEIGHBOUR_FACTOR * _shortest(spec, centre)
    c = spec.atoms[centre][1:]
    return [j for j, a in enumerate(spec.atoms) if j != centre and math.dist(c, a[1:]) <= cut]


def _shortest(spec: MoleculeSpec, centre: int) -> float:
    c = spec.atoms[centre][1:]
    return min(math.dist(c, a[1:]) for j, a in enumerate(spec.atoms) if j != centre)


def _along(origin, point, r: float) -> list[float]:
    d = math.dist(origin, point)
    return [o + (p - o) * r / d for o, p in zip(origin, point)]


def _centroid(points) -> list[float]:
    return [sum(p[i] for p in points) / len(points) for i in range(3)]


def geometry_text(spec: MoleculeSpec) -> str:
    return "; ".join(f"{s} {x:.10f} {y:.10f} {z:.10f}" for s, x, y, z in spec.atoms)
