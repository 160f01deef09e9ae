"""The Airflow package's floors (docs/architecture.md, Layout): a module imports only modules of floors below
its own, or of its own unit; the pure logic imports no Airflow-facing code at all."""
import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
OPERATORS = Path(__file__).resolve().parents[2] / "operators"
FLOORS = {"tasks": 5, "step": 4, "sensors": 4, "cli": 4, "deploy": 3, "triggers": 3, "links": 3,
          "hooks": 2, "runtime": 2, "pipeline": 1}


def unit_of(path: Path) -> str:
    rel = path.relative_to(OPERATORS)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_units(path: Path) -> set[str]:
    """The operators units a module imports, at the top or inside functions, absolute or relative."""
    package = ["operators", *path.relative_to(OPERATORS).parent.parts]
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            names = [".".join([*base, *(node.module.split(".") if node.module else [])])]
            if node.level and not node.module:
                names = [f"{'.'.join(base)}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "operators" and len(parts) > 1:
                units.add(parts[1])
    return units


def test_every_unit_has_a_floor():
    units = {unit_of(p) for p in OPERATORS.rglob("*.py")} - {"__init__"}
    assert units == set(FLOORS), units ^ set(FLOORS)


@pytest.mark.parametrize("path", sorted(OPERATORS.rglob("*.py")), ids=lambda p: str(p.relative_to(OPERATORS)))
def test_imports_only_go_down(path):
    own = unit_of(path)
    if own == "__init__":
        return
    for unit in imported_units(path) - {own}:
        assert FLOORS[unit] < FLOORS[own], f"operators/{path.relative_to(OPERATORS)} ({own}, floor {FLOORS[own]}) " \
                                           f"imports {unit} (floor {FLOORS[unit]})"
