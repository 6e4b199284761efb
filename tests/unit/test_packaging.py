"""pyproject.toml lists packages explicitly (models/ installs as edge.models): keep it complete."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _listed():
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_code_package_is_listed():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edge").rglob("__init__.py")}
    assert found - _listed() == set()


def test_every_model_folder_is_listed():
    folders = {f"edge.models.{p.name}" for p in (ROOT / "models").iterdir()
               if p.is_dir() and p.name != "__pycache__"}
    assert folders - _listed() == set()
