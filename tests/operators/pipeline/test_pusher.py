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


def judged(baseline):
    return {**BLESSED, pusher.BASELINE: baseline}


@pytest.mark.parametrize("baseline, production, version", [(1, 2, None), (None, 1, None), (1, None, None),
                                                           (2, 3, 4)])
def test_a_candidate_judged_against_a_version_that_no_longer_serves_is_skipped(baseline, production, version):
    """Production moved since evaluation (a full retrain promoted meanwhile): skipped, naming both versions."""
    d = decide(judged(baseline), "incremental-day5", production=production, version=version)
    assert (d.action, d.production_moved) == (SKIP_SUPERSEDED, True)
    name = {None: "none"}
    assert (f"judged against (and descends from) production version {name.get(baseline, baseline)}, but "
            f"production is now version {name.get(production, production)}") in d.reason
    assert d.version == version


@pytest.mark.parametrize("baseline, production, version, action", [(1, 1, None, PUSH_NEW), (None, None, None, PUSH_NEW),
                                                                   (2, 2, 3, PROMOTE)])
def test_a_candidate_judged_against_what_serves_goes_ahead_expecting_it(baseline, production, version, action):
    d = decide(judged(baseline), "r", production=production, version=version)
    assert (d.action, d.expected, d.production_moved) == (action, production, False)


def test_a_corrected_day_replacing_its_own_serving_version_is_not_superseded():
    """The run's own earlier version serves (judged against its parent, as this candidate was)."""
    d = decide(judged(3), "day-7", production=4, version=None, earlier=4, changes=["raw day 7: sha256 a -> b"])
    assert (d.action, d.replaces, d.expected) == (PUSH_NEW, 4, 4)


def test_a_blessing_without_the_record_promotes_over_what_serves_now():
    """A blessing made before baseline_version was recorded: the pointer still moves by compare-and-swap."""
    d = decide(BLESSED, "r", production=4, version=None)
    assert (d.action, d.expected) == (PUSH_NEW, 4)


def test_reuse_and_old_reruns_are_not_re_judged():
    assert decide(judged(1), "r", production=4, version=4).action == REUSE
    d = decide(judged(1), "r", production=5, version=3)
    assert (d.action, d.production_moved) == (SKIP_SUPERSEDED, False)
