"""The command table (criteo_kernel.commands): every command names a module of its own image, every
image's entry point dispatches through the table, and the error classes it names exist. Read from
the sources, not imported: each environment has only some images' dependencies."""
import ast
from pathlib import Path

import pytest

from criteo_kernel import commands, result
from criteo_kernel.trainers import TRAIN_STEP, TRAINERS
from tests.conftest import REPO

pytestmark = pytest.mark.unit

SOURCES = {"criteo_kernel": REPO / "images/kernel/src", "criteo_merlin": REPO / "images/merlin/src",
           "criteo_validator": REPO / "images/validator/src", "criteo_monitoring": REPO / "images/monitoring/src"}


def module_file(module: str) -> Path:
    return SOURCES[module.split(".")[0]] / (module.replace(".", "/") + ".py")


def test_every_command_runs_a_main_of_its_own_package():
    for package, entry in commands.PACKAGES.items():
        assert entry.commands and (entry.default is None or entry.default in entry.commands), package
        for command, module in entry.commands.items():
            assert module.split(".")[0] == package, (package, command, module)
            path = module_file(module)
            assert path.is_file(), f"{package} {command}: {module} is not {path.relative_to(REPO)}"
            defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
            assert "main" in defined, f"{module} has no main(argv)"


def test_the_error_classes_named_exist():
    for package, entry in commands.PACKAGES.items():
        for dotted in (*entry.data_errors, *entry.retryable_errors):
            module, _, name = dotted.rpartition(".")
            assert module.split(".")[0] in (package, "criteo_kernel"), dotted
            classes = {n.name for n in ast.parse(module_file(module).read_text()).body if isinstance(n, ast.ClassDef)}
            assert name in classes, dotted


@pytest.mark.parametrize("package", sorted(commands.PACKAGES))
def test_every_images_entry_point_dispatches_through_the_table(package):
    tree = ast.parse((SOURCES[package] / package / "__main__.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "dispatch"]
    assert [[a.value for a in c.args] for c in calls] == [[package]] and not calls[0].keywords
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.Assign))], "no table of its own"


def test_every_image_package_is_in_the_table():
    images = {p.parent.name for p in (REPO / "images").glob("*/src/*/__main__.py")}
    assert images == set(commands.PACKAGES)


def test_a_command_is_resolved_and_the_validators_default_is_validate():
    assert commands.resolve("criteo_merlin", ["train_hugectr", "--train", "x"]) == (
        "train_hugectr", "criteo_merlin.hugectr.train_hugectr", ["--train", "x"])
    assert commands.resolve("criteo_merlin", ["--help"]) is None
    assert commands.resolve("criteo_validator", ["--input", "x"]) == ("validate", "criteo_validator.validate",
                                                                     ["--input", "x"])
    assert commands.resolve("criteo_validator", ["validate", "--input", "x"])[2] == ["--input", "x"]
    assert commands.resolve("criteo_validator", ["reference"])[:2] == ("reference", "criteo_validator.profile")
    assert commands.command_line("criteo_monitoring", "request_log_to_day") == ("request_log_to_day",)
    with pytest.raises(KeyError, match="to-day"):
        commands.command_line("criteo_monitoring", "to-day")


def test_each_trainer_is_trained_by_a_command_of_the_merlin_image():
    assert set(TRAIN_STEP) == set(TRAINERS)
    for step in TRAIN_STEP.values():
        assert step in commands.PACKAGES["criteo_merlin"].commands


def test_a_command_runs_as_a_step_with_the_packages_error_mapping(tmp_path, monkeypatch, capsys):
    """The kernel's own package stands in for an image's: its DecodeError is a data error."""
    monkeypatch.setitem(commands.PACKAGES, "criteo_x", commands.Package(
        {"fail": "tests.images.kernel.test_commands"}, data_errors=("criteo_kernel.codecs.DecodeError",)))
    monkeypatch.setenv(result.RESULT_PATH_ENV, str(tmp_path / "return.json"))
    assert result.run_command("criteo_x", ["fail", "C3"]) == result.BAD_DATA
    assert "ERROR: fail: column C3: not hex" in capsys.readouterr().err


def main(argv):
    from criteo_kernel.codecs import DecodeError

    raise DecodeError(f"column {argv[0]}: not hex")
