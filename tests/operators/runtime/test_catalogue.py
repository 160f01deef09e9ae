"""The step catalogue against the kernel's command table: a step's name is its command in its image,
and each command runs a module its image's package has."""
import pytest

from criteo_kernel import commands
from criteo_kernel.trainers import TRAIN_STEP, TRAINERS
from operators.pipeline import planning
from operators.runtime.catalogue import IMAGES, STEPS
from tests.conftest import REPO

pytestmark = pytest.mark.unit

SOURCES = {"criteo_merlin": REPO / "images/merlin/src", "criteo_validator": REPO / "images/validator/src",
           "criteo_monitoring": REPO / "images/monitoring/src"}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_step_is_a_command_of_its_images_package(name):
    spec = STEPS[name]
    assert spec.name == name and spec.command == (name,)
    module = commands.PACKAGES[spec.module].commands[name]
    assert (SOURCES[spec.module] / (module.replace(".", "/") + ".py")).is_file(), module


def test_every_image_runs_a_package_of_the_table():
    assert set(IMAGES.values()) == set(commands.PACKAGES)


def test_a_command_missing_from_the_table_is_refused():
    spec = STEPS["train_hugectr"]
    assert spec.command == ("train_hugectr",) and spec.module == "criteo_merlin"
    with pytest.raises(KeyError, match="criteo_merlin has no command 'train-hugectr'"):
        commands.command_line("criteo_merlin", "train-hugectr")


def test_each_trainer_trains_with_its_catalogue_step():
    assert set(planning.TRAINERS) == set(TRAINERS) == set(planning.PRECISIONS)
    for trainer, (step, _) in planning.TRAINERS.items():
        assert step == TRAIN_STEP[trainer] and step in STEPS and STEPS[step].gpu
