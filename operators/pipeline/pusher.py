"""What deploy does with a blessing (after TFX's Pusher): a pure decision over plain values.

The deploy operator (operators/deploy.py) reads what the model repository holds for the run key and
which version serves, asks `decide`, then acts through the serving module (operators/hooks/serving.py):

- REFUSE: nothing blessed to ship, or the run's inputs changed after later runs deployed (promoting
  the corrected candidate would drop what they learned): the task fails without retry;
- REUSE: this run key made the serving version from the same inputs: check that Triton serves it;
- PROMOTE: this run key pushed a version from the same inputs that never served: promote it;
- SKIP_SUPERSEDED: that version was superseded or rolled back: a rerun never takes production backwards;
  or production moved since the candidate was judged (the blessing's `baseline_version`): see below;
- PUSH_NEW: no version from these inputs: push one (replacing the run's earlier one, if any), promote it.

A candidate is judged against production at plan time (evaluate's baseline, the plan's
`parent_version`; a daily run also warm-starts from it), and the blessing records which version that
was. If another deploy (a full retrain, a backfill) promoted a different version meanwhile, the
candidate is skipped as superseded, not promoted and not re-judged: it descends from a version that
no longer serves, so promoting it would drop what the newer production learned, and comparing it
with the newer production would compare models of different lineage. The next scheduled run
trains from the new production. The deploy operator checks the same condition again in the
conditional write that moves the pointer (ModelRepositoryHook.set_production's `expected`), so a
race between the two deploys ends the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

REFUSE = "refuse"
REUSE = "reuse"
PROMOTE = "promote"
SKIP_SUPERSEDED = "skip-superseded"
PUSH_NEW = "push-new"


BASELINE = "baseline_version"   # the blessing's record of the production it was judged against


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    version: int | None = None     # the existing version acted on (REUSE, PROMOTE, SKIP_SUPERSEDED)
    replaces: int | None = None    # PUSH_NEW: the run's earlier version from other inputs
    expected: int | None = None    # PROMOTE, PUSH_NEW: the version that must still serve when the pointer moves
    production_moved: bool = False  # SKIP_SUPERSEDED: production is no longer what the candidate was judged against


def unblessed(blessing: dict | None) -> str | None:
    """Why the blessing does not let anything ship; None when it names a blessed package."""
    if not blessing or not blessing.get("blessed") or not blessing.get("package"):
        return f"deploy needs a blessed package; the blessing says {blessing or {}!r}"
    return None


def decide(blessing: dict | None, run_key: str, production: int | None, version: int | None,
           rolled_back: bool = False, earlier: int | None = None, changes: list[str] | None = None) -> Decision:
    """The action for one deploy.

    :param blessing: the blessing gate's verdict (`blessed`, `package`).
    :param production: the version that serves now (None: none yet).
    :param version: the newest complete version this run key made from the same inputs (None: none).
    :param rolled_back: whether `version` was left by a rollback.
    :param earlier: with no `version`, the newest one this run key made from other inputs (None: none).
    :param changes: what differs between the inputs of `earlier` and this run's.
    """
    reason = unblessed(blessing)
    if reason:
        return Decision(REFUSE, reason)
    decision = _decide(blessing, run_key, production, version, rolled_back, earlier, changes)
    if decision.action not in (PROMOTE, PUSH_NEW):
        return decision
    # Production may be what the candidate was judged against, or this run's own earlier version
    # (a corrected day replacing it: judged against the same parent). A blessing from before the
    # record (no key) promotes over what serves now, the pointer still moving by compare-and-swap.
    judged = blessing[BASELINE] if BASELINE in blessing else production
    if production != judged and (earlier is None or production != earlier):
        return Decision(SKIP_SUPERSEDED, superseded(run_key, judged, production), decision.version,
                        production_moved=True)
    return Decision(decision.action, decision.reason, decision.version, decision.replaces, production)


def superseded(run_key: str, judged: int | None, production: int | None) -> str:
    """Why a candidate judged against `judged` is not promoted over `production` (module doc)."""
    return (f"skipped as superseded: run {run_key}'s candidate was judged against (and descends from) production "
            f"version {_name(judged)}, but production is now version {_name(production)}, promoted by another "
            "deploy meanwhile. Promoting it would drop what that version learned; the next scheduled run trains "
            f"from version {_name(production)}. Nothing was promoted")


def _name(version: int | None) -> str:
    return "none" if version is None else str(version)


def _decide(blessing: dict, run_key: str, production: int | None, version: int | None, rolled_back: bool,
            earlier: int | None, changes: list[str] | None) -> Decision:
    if version is not None:
        if version == production:
            return Decision(REUSE, f"run {run_key} is deployed as version {version}, which serves; "
                                   "checking Triton serves it", version)
        if (production is not None and version < production) or rolled_back:
            return Decision(SKIP_SUPERSEDED, f"run {run_key} was deployed as version {version}, since superseded "
                                             f"or rolled back (production: {production}); nothing to do", version)
        return Decision(PROMOTE, f"run {run_key} was pushed as version {version} but never promoted; promoting it",
                        version)
    what = "; ".join(changes or [])
    if earlier is not None and production is not None and production > earlier:
        return Decision(REFUSE, f"run {run_key} made version {earlier}, and its inputs changed since ({what}); but "
                                f"production is version {production}, deployed after it, so promoting this candidate "
                                f"would drop what the later runs learned. Production stays at version {production}. "
                                "Retrain instead: trigger criteo_full_retrain over the window (or roll back and "
                                "rerun the days in order).")
    if earlier is not None:
        return Decision(PUSH_NEW, f"run {run_key} made version {earlier} from other inputs: {what}; this candidate "
                                  "becomes a new version replacing it", replaces=earlier)
    return Decision(PUSH_NEW, f"run {run_key} has no version yet: pushing the candidate")
