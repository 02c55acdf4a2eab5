"""The built wheel holds the whole package (catalogue and presets included); the library never imports the CLI."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nqs"


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    """Names inside a wheel built offline from a copy of the source (the checkout's build/ stays untouched)."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "nqs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("nqs_scaling-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _package_files(pattern: str) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob(pattern) if "__pycache__" not in p.parts)


def test_wheel_holds_every_catalogue_molecule_and_preset(wheel_names):
    molecules = _package_files("hamiltonians/*.toml")
    presets = _package_files("presets/*.yaml")
    assert len(molecules) >= 20 and "nqs/hamiltonians/LiH.toml" in molecules
    assert {"nqs/presets/reference.yaml", "nqs/presets/small.yaml"} <= set(presets)
    missing = [f for f in [*molecules, *presets, "nqs/hamiltonians/README.md"] if f not in wheel_names]
    assert not missing, f"not in the wheel: {missing} (declare them in [tool.setuptools.package-data])"


def test_wheel_holds_every_module(wheel_names):
    missing = [f for f in _package_files("*.py") if f not in wheel_names]
    assert not missing, f"modules not in the wheel: {missing} (check [tool.setuptools.packages.find])"


def test_catalogue_and_presets_load_through_the_package():
    from nqs.molecules import catalogue_names, load_molecule
    from nqs.training.presets import load_preset, preset_names

    molecules = [p.stem for p in (PACKAGE / "hamiltonians").glob("*.toml") if not p.name.endswith(".family.toml")]
    assert catalogue_names() == sorted(molecules)
    assert load_molecule("lih").name == "LiH"
    assert load_molecule("H12").n_electrons == 12  # the chain family ships too
    assert preset_names() == sorted(p.stem for p in (PACKAGE / "presets").glob("*.yaml"))
    assert load_preset("reference")["d_model"] == 16


def test_unknown_preset_lists_the_names():
    from nqs.errors import UserError
    from nqs.training.presets import load_preset

    with pytest.raises(UserError, match="unknown preset 'tiny': choose one of large, medium, reference, small"):
        load_preset("tiny")


def test_hamiltonians_override_must_be_a_folder(monkeypatch, tmp_path):
    from nqs.errors import UserError
    from nqs.molecules import catalogue_names, load_molecule

    monkeypatch.setenv("NQS_HAMILTONIANS", str(tmp_path / "absent"))
    with pytest.raises(UserError, match="NQS_HAMILTONIANS=.*is not a folder"):
        load_molecule("LiH")
    shutil.copy2(PACKAGE / "hamiltonians" / "H2.toml", tmp_path / "Hydrogen.toml")
    monkeypatch.setenv("NQS_HAMILTONIANS", str(tmp_path))
    assert catalogue_names() == ["Hydrogen"]
    with pytest.raises(UserError, match="unknown molecule 'LiH'"):
        load_molecule("LiH")


def _imports_cli(path: Path, root: Path = ROOT) -> list[str]:
    """Import statements of a module that reach nqs.cli (absolute or relative); `root` holds the package."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[:len(parts) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found += [f"line {node.lineno}: {n}" for n in names if n == "nqs.cli" or n.startswith("nqs.cli.")]
    return found


def test_library_never_imports_the_cli():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts[:1]:
            continue
        hits = _imports_cli(path)
        if hits:
            offenders[path.relative_to(ROOT).as_posix()] = hits
    assert not offenders, f"library modules importing nqs.cli: {offenders}"


def test_cli_import_scan_catches_absolute_and_relative_imports(tmp_path):
    """The scan above can fail: it finds every spelling of a CLI import in a planted module."""
    fake = tmp_path / "nqs" / "scaling" / "planted.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("import nqs.cli.train\nfrom ..cli import fit\nfrom nqs import cli\nimport nqs.molecules\n")
    hits = _imports_cli(fake, root=tmp_path)
    assert hits == ["line 1: nqs.cli.train", "line 2: nqs.cli", "line 2: nqs.cli.fit", "line 3: nqs.cli"]
