"""The layering of the whole tree (docs/architecture.md): a module imports only from layers below
its own, or from its own unit; no two modules import each other, directly or in a ring.

    bench, scripts             5   demos and benchmarks: anything below
    local_servers              4   the local stand-ins of production's servers (tests, demos, benches)
    dags, plugins              3   what Airflow loads
    k8s                        3   the serving stack's Kustomize manifests; adapter.py reads the autoscaler's rule
    operators                  2   the Airflow side, floored inside (OPERATOR_FLOORS)
    criteo_merlin, criteo_validator, criteo_monitoring   1   the images' step code: the kernel only
    criteo_kernel              0   the contract every image and the Airflow side share

The step packages never import each other (each image carries its own) and the Airflow side never
imports them: it runs steps through a runtime, so the Airflow image carries no step package.
"""
import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"criteo_kernel": REPO / "images/kernel/src/criteo_kernel",
            "criteo_merlin": REPO / "images/merlin/src/criteo_merlin",
            "criteo_validator": REPO / "images/validator/src/criteo_validator",
            "criteo_monitoring": REPO / "images/monitoring/src/criteo_monitoring",
            "operators": REPO / "operators", "dags": REPO / "dags", "plugins": REPO / "plugins",
            "local_servers": REPO / "local_servers", "scripts": REPO / "scripts", "bench": REPO / "bench",
            "k8s": REPO / "k8s"}
FLOORS = {"criteo_kernel": 0, "criteo_merlin": 1, "criteo_validator": 1, "criteo_monitoring": 1, "operators": 2,
          "dags": 3, "plugins": 3, "k8s": 3, "local_servers": 4, "scripts": 5, "bench": 5}
OPERATOR_FLOORS = {"tasks": 5, "step": 4, "sensors": 4, "cli": 4, "deploy": 3, "triggers": 3, "links": 3,
                   "hooks": 2, "runtime": 2, "pipeline": 1}
# What a script or bench file imports from its own folder by bare name (they put it on sys.path).
FLAT = {"scripts", "bench"}


def modules() -> dict[str, Path]:
    """Every module of the tree by dotted name."""
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """The tree's modules `name` imports, at the top or inside functions, absolute or relative."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    top = name.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            targets = [".".join(module)] + [".".join([*module, a.name]) for a in node.names]
        for target in targets:
            if top in FLAT and target.split(".")[0] in {p.stem for p in PACKAGES[top].glob("*.py")}:
                target = f"{top}.{target}"
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def floor(module: str) -> tuple[str, int]:
    top, _, rest = module.partition(".")
    return top, FLOORS[top]


def test_every_top_level_folder_of_code_has_a_layer():
    code = {p.parts[0] for p in (f.relative_to(REPO) for f in REPO.rglob("*.py"))
            if not p.parts[0].startswith(".") and p.parts[0] not in ("tests", "images", "build")}
    assert code <= set(PACKAGES), code - set(PACKAGES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_only_go_down(name):
    top, level = floor(name)
    for target in GRAPH[name]:
        other, other_level = floor(target)
        if other == top:
            continue
        assert other_level < level, f"{name} (layer {top}, {level}) imports {target} (layer {other}, {other_level})"


def test_the_operators_floors_inside_the_airflow_side():
    def unit(module):
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None

    assert {unit(m) for m in MODULES if m.startswith("operators.")} - {None} == set(OPERATOR_FLOORS)
    for name in (m for m in MODULES if m.startswith("operators.")):
        own = unit(name)
        for target in GRAPH[name]:
            other = unit(target) if target.startswith("operators.") else None
            if other and other != own:
                assert OPERATOR_FLOORS[other] < OPERATOR_FLOORS[own], f"{name} ({own}) imports {target} ({other})"


def test_no_import_cycle():
    """No ring of modules importing each other (function-level imports count: they only hide one)."""
    state, stack, rings = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == "open":
                rings.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not rings, "\n".join(" -> ".join(r) for r in rings)
