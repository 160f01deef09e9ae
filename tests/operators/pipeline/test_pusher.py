"""The pusher's decision (operators/pipeline/pusher.py): every outcome deploy can take, from plain values."""
import pytest

from operators.pipeline import pusher
from operators.pipeline.pusher import PROMOTE, PUSH_NEW, REFUSE, REUSE, SKIP_SUPERSEDED, decide

pytestmark = pytest.mark.unit
BLESSED = {"blessed": True, "package": "gs://b/runs/r/export"}


@pytest.mark.parametrize("blessing", [None, {}, {"blessed": False, "package": "p"}, {"blessed": True}])
def test_nothing_blessed_is_refused(blessing):
    d = decide(blessing, "r", production=3, version=None)
    assert d.action == REFUSE and d.reason.startswith("deploy needs a blessed package; the blessing says")
    assert pusher.unblessed(blessing) == d.reason and pusher.unblessed(BLESSED) is None


def test_the_serving_version_of_this_run_is_reused():
    d = decide(BLESSED, "day-7", production=4, version=4)
    assert (d.action, d.version) == (REUSE, 4) and "checking Triton serves it" in d.reason


def test_a_version_pushed_but_never_promoted_is_promoted():
    for production in (None, 2):
        d = decide(BLESSED, "day-7", production=production, version=3)
        assert (d.action, d.version) == (PROMOTE, 3) and "never promoted" in d.reason


@pytest.mark.parametrize("production, rolled_back", [(5, False), (2, True), (None, True)])
def test_a_superseded_or_rolled_back_version_is_left_alone(production, rolled_back):
    d = decide(BLESSED, "day-7", production=production, version=3, rolled_back=rolled_back)
    assert (d.action, d.version) == (SKIP_SUPERSEDED, 3) and f"production: {production}" in d.reason


def test_a_new_run_pushes_a_new_version():
    d = decide(BLESSED, "day-7", production=4, version=None)
    assert (d.action, d.version, d.replaces) == (PUSH_NEW, None, None)


def test_other_inputs_make_a_new_version_replacing_the_earlier_one():
    d = decide(BLESSED, "day-7", production=4, version=None, earlier=4, changes=["raw day 7: sha256 a -> b"])
    assert (d.action, d.replaces) == (PUSH_NEW, 4) and "raw day 7: sha256 a -> b" in d.reason
    assert decide(BLESSED, "day-7", production=None, version=None, earlier=2, changes=[]).action == PUSH_NEW


def test_other_inputs_after_later_deploys_are_refused():
    d = decide(BLESSED, "day-7", production=6, version=None, earlier=4, changes=["raw day 7: rows 10 -> 12"])
    assert d.action == REFUSE
    assert d.reason.startswith("run day-7 made version 4, and its inputs changed since (raw day 7: rows 10 -> 12); "
                               "but production is version 6, deployed after it")
    assert "Production stays at version 6. Retrain instead: trigger criteo_full_retrain" in d.reason
