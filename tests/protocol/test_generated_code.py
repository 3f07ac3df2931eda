"""The committed generated files are exactly what the generators make from the `.proto` files.

Regenerates into a temporary directory and compares byte for byte: the Python code
(`proto/generate.py`), and the readable specification and constraint table
(`proto/specdoc.py`). A difference means a `.proto` file changed without `make gen`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from hotline import deadlines

PROTO = Path(__file__).resolve().parents[2] / "proto"
STALE = "is stale: run `make gen` and commit the result"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_hotline_{name}", PROTO / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def specdoc() -> ModuleType:
    return load_script("specdoc")


def generated_code(root: Path) -> dict[str, bytes]:
    folder = root / "hotline" / "v1"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*_pb2*.py*"))}


def test_generated_python_code_is_up_to_date(tmp_path: Path) -> None:
    assert load_script("generate").main(["--out", str(tmp_path)]) == 0
    fresh, committed = generated_code(tmp_path), generated_code(PROTO)
    assert sorted(committed) == sorted(fresh), f"the set of generated files {STALE}"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"proto/hotline/v1/{', '.join(stale)} {STALE}"


def test_spec_and_constraint_table_are_up_to_date(tmp_path: Path, specdoc: ModuleType) -> None:
    assert specdoc.main(["--out", str(tmp_path)]) == 0
    for relative in ("SPEC.md", "hotline/constraints.py", "hotline/must_index.json"):
        fresh = (tmp_path / relative).read_bytes()
        assert (PROTO / relative).read_bytes() == fresh, f"proto/{relative} {STALE}"


def test_the_default_deadlines_are_those_of_the_spec(specdoc: ModuleType) -> None:
    files, errors = specdoc.read_spec(specdoc.load_descriptor_set())
    assert errors == []
    units = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}
    stated = {}
    for value, deadline, _ in specdoc.default_deadlines(files):
        amount, unit = deadline.split()
        stated[value.number] = int(amount) * units[unit]
    assert stated == dict(deadlines.DEFAULT_DEADLINES_S)


def test_the_spec_linter_refuses_a_field_without_constraints(specdoc: ModuleType) -> None:
    fds = specdoc.load_descriptor_set()
    common = next(f for f in fds.file if f.name == "hotline/v1/common.proto")
    for location in common.source_code_info.location:
        if location.leading_comments.rstrip().endswith("Constraints: required; -90.0..90.0."):
            location.leading_comments = " Latitude in degrees, positive north.\n"
    _, errors = specdoc.read_spec(fds)
    assert len(errors) == 1
    assert "hotline.v1.Position.latitude_deg" in errors[0]
    assert "must end with a Constraints line" in errors[0]
