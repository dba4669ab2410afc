"""The typed stubs name what the module has: every public name of each submodule is in its
.pyi, and every class, function or constant the .pyi declares exists (TypedDicts that only
describe returned dicts excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import memsys

STUBS = Path(memsys.__file__).resolve().parent


TYPE_ONLY = {"TypedDict", "Protocol"}


def type_only(n: ast.AST) -> bool:
    """A class that exists only for type checkers (a TypedDict describing a returned dict)."""
    return isinstance(n, ast.ClassDef) and any(
        (isinstance(b, ast.Name) and b.id in TYPE_ONLY)
        or (isinstance(b, ast.Attribute) and b.attr in TYPE_ONLY)
        for b in n.bases
    )


def declared(stub: Path) -> set[str]:
    tree = ast.parse(stub.read_text())
    constants = {
        n.target.id
        for n in tree.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    return constants | {
        n.name
        for n in tree.body
        if isinstance(n, (ast.ClassDef, ast.FunctionDef))
        and not n.name.startswith("_")
        and not type_only(n)
    }


@pytest.mark.parametrize("sub", ["datahub", "mmsb", "tslab"])
def test_stub_and_module_name_the_same_classes_and_functions(sub):
    stub = STUBS / f"{sub}.pyi"
    if not stub.exists():
        pytest.fail(f"{stub} is missing")
    module = getattr(memsys, sub)
    public = {n for n in dir(module) if not n.startswith("_")}
    names = declared(stub)
    assert names - public == set(), f"declared in {stub.name} but missing: {names - public}"
    assert public - names == set(), f"in memsys.{sub} but not in {stub.name}: {public - names}"
