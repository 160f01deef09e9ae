"""The container images, checked without Docker (none runs here): every file a Dockerfile copies
exists, every service of docker-compose.yaml builds from a Dockerfile that exists, and each step
image copies every module its code imports (the local venvs would hide a missing one)."""
import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(REPO.glob("images/*/Dockerfile"))


def copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        if line.strip().startswith("COPY "):
            args = [a for a in shlex.split(line.strip())[1:] if not a.startswith("--")]
            out.append((args[:-1], args[-1]))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_copied_path_exists(dockerfile):
    for sources, _ in copies(dockerfile):
        for src in sources:
            assert (REPO / src).exists(), f"{dockerfile.relative_to(REPO)}: COPY {src}: no such path"


def test_compose_builds_from_existing_dockerfiles():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    built = {}
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (REPO / build["dockerfile"]).is_file(), name
            built[name] = build["dockerfile"]
    assert {"images/triton/Dockerfile", "images/monitoring/Dockerfile",
            "images/airflow/Dockerfile"} <= set(built.values())
    # the monitoring sensors' deferred half needs a triggerer; the Airflow side finds the servers by Variable
    assert "airflow-triggerer" in compose["services"]
    env = compose["x-airflow"]["environment"]
    assert env["AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL"] == "triton:8001"
    assert env["AIRFLOW_VAR_CRITEO_PROMETHEUS_URL"] == "http://prometheus:9090"


IMAGE_PACKAGES = {"merlin": "criteo_merlin", "validator": "criteo_validator", "monitoring": "criteo_monitoring"}
SOURCES = {"criteo_kernel": REPO / "images/kernel/src", **{pkg: REPO / f"images/{image}/src"
                                                           for image, pkg in IMAGE_PACKAGES.items()}}


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module `path` imports (at any depth), relative imports resolved inside `package`."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `.` is the file's own package, each further dot one package up
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def project_files(package: str) -> list[Path]:
    return sorted((SOURCES[package] / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_no_image_package_imports_another_images(package):
    """An image package imports itself and the shared kernel only; the kernel imports no image package."""
    allowed = {package, "criteo_kernel"}
    for path in project_files(package):
        sub = path.parent.relative_to(SOURCES[package]).as_posix().replace("/", ".")
        for name in imported_modules(path, sub):
            root = name.split(".")[0]
            if root in SOURCES or root in ("operators", "local_servers", "dags", "plugins"):
                assert root in allowed, f"{path.relative_to(REPO)} imports {name}"


@pytest.mark.parametrize("image,entry", sorted(IMAGE_PACKAGES.items()))
def test_step_images_copy_every_project_module_they_import(image, entry):
    """Follow the imports from the image's own package through the project's packages; each module
    reached must be in the image (copied whole with its package folder)."""
    copied = set()
    for srcs, _ in copies(REPO / f"images/{image}/Dockerfile"):
        for src in srcs:
            p = REPO / src
            files = p.rglob("*.py") if p.is_dir() else [p]
            copied |= {f.resolve() for f in files}
    todo, seen = [entry], set()
    while todo:
        module = todo.pop()
        if module in seen or module.split(".")[0] not in SOURCES:
            continue
        seen.add(module)
        root = SOURCES[module.split(".")[0]]
        path = root / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = root / module.replace(".", "/") / "__init__.py"
        assert path.exists(), f"{module} is imported but is not in the repository"
        assert path.resolve() in copied, f"images/{image}/Dockerfile does not copy {path.relative_to(REPO)} ({module})"
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        todo += list(imported_modules(path, package))
        if module == entry:  # the image's own package: every module of it (its commands import them lazily)
            todo += [".".join((module, *f.relative_to(path.parent).with_suffix("").parts))
                     for f in path.parent.rglob("*.py") if f.stem != "__init__"]
    assert entry in seen and "criteo_kernel" in {m.split(".")[0] for m in seen}


@pytest.mark.parametrize("image", sorted(IMAGE_PACKAGES))
def test_each_image_copies_the_kernel_whole_and_no_other_images_code(image):
    sources = {src for srcs, _ in copies(REPO / f"images/{image}/Dockerfile") for src in srcs}
    assert "images/kernel/src/" in sources, f"images/{image}/Dockerfile does not copy the shared kernel"
    own = (f"images/{image}/", "images/kernel/")
    others = {s for s in sources if s.startswith("images/") and not s.startswith(own)}
    assert not others, f"images/{image}/Dockerfile copies other images' files: {sorted(others)}"
