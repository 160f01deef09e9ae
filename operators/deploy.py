"""Deploy: push the blessed package into the Triton model repository as a new version, promote
it, and prove Triton serves it; roll back when it does not (after TFX's Pusher).

DeployModelOperator consumes the blessing (operators/pipeline/blessing.py): the blessed package and
the held-out rows its smoke inference uses are the evaluate step's outputs, named by the blessing.
What to do with it is decided by operators/pipeline/pusher.py from what the repository holds;
promotion, smoke inference and rollback are the serving module's (operators/hooks/serving.py).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from airflow.sdk import BaseOperator

# The Airflow pool every deploy task runs in, one slot: deploys of all DAGs take turns (created by the
# project's setup: local_servers.airflow, docker-compose.yaml's airflow-init, the tests' fixtures).
# Only a courtesy against wasted work: the compare-and-swap on the pointer and the create-only claim of a
# version number (operators/hooks/model_repository.py) keep two deploys that do run at once correct.
DEPLOY_POOL = "criteo_deploy"
DEPLOY_POOL_DESCRIPTION = "One deploy at a time across the training DAGs (operators/deploy.py)"


def ensure_deploy_pool() -> None:
    """Create (or reset to one slot) the pool DEPLOY_POOL in the metadata database AIRFLOW_HOME's
    configuration names; every setup runs it after `airflow db migrate` (`python -m operators.deploy
    create-pool`): a task whose pool does not exist is never scheduled."""
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(DEPLOY_POOL, 1, DEPLOY_POOL_DESCRIPTION, include_deferred=False)


def code_revision() -> str:
    """The git revision of the pipeline code (images bake it in as CRITEO_CODE_REVISION)."""
    if os.environ.get("CRITEO_CODE_REVISION"):
        return os.environ["CRITEO_CODE_REVISION"]
    import subprocess

    from .pipeline.config import REPO_ROOT

    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def plain(obj):
    """Materialise XCom values (mapped results arrive as lazy sequences) into JSON-able data."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "__iter__"):
        return [plain(x) for x in obj]
    return str(obj)


def triton_replicas(settings) -> list:
    """The Triton replicas the run's settings name (criteo_triton_replicas, else criteo_triton_grpc_url)."""
    from .hooks.serving import replicas

    return replicas(settings.serving.triton_replicas, settings.serving.triton_grpc_url)


def repository(settings):
    """The model repository the run's settings name, writing their queue delay and instance kind at each
    promotion."""
    from .hooks.model_repository import ModelRepositoryHook
    from .pipeline.layout import Layout

    return ModelRepositoryHook(Layout(settings), settings.serving.max_queue_delay_us, settings.serving.instance_kind)


class DeployModelOperator(BaseOperator):
    """Publish the blessed package as the next version of the model in the Triton repository.

    Then promotes it on Triton (operators/hooks/serving.py): Triton loads it and a smoke inference on held-out rows
    must match the offline predictions, else the previous version is restored and the task fails
    without retry (the version keeps its files, marked `_REJECTED`). Triton unreachable: the task
    fails and retries; the version stays pushed but unpromoted, and the retry promotes it.
    After a promotion only the newest `criteo_keep_versions` versions are kept.

    Production must still be the version the candidate was judged against (the blessing's
    `baseline_version`; operators/pipeline/pusher.py says why): if another deploy promoted a
    version meanwhile, the task ends skipped (superseded), naming both versions. The check is
    repeated in the conditional write that moves the pointer; a version pushed before losing that
    race is marked `_SUPERSEDED` (never promoted by a rerun) and Triton is not touched. Runs in the
    pool DEPLOY_POOL (one slot).

    Idempotent: if a version with the same run key and the same inputs (`inputs`' fingerprint,
    operators/pipeline/identity.py) exists, nothing is copied; it is promoted only if it never
    served (newer than production, not rolled back), so a rerun or backfill of an old run never
    takes production backwards. The same run key with other inputs (a corrected raw day) makes a
    new version; its lineage names the version it replaces and both fingerprints. If later runs
    have deployed since the replaced version, the task fails without retry instead: promoting the
    corrected day would drop what they learned (retrain the window instead).

    :param settings: the run's settings, as its first task decided them (templated: `plan["settings"]`).
    :param blessing: the blessing gate's verdict (templated; the gate's XCom): `blessed`, and the
        `package` (export's output, as evaluated) and `smoke_rows` (evaluate's held-out rows with
        their offline predictions) it names.
    :param run_key: identity of the training run: the day or window and settings (the plan's).
    :param inputs: what the run read (templated): `raw` (extract's `input` result per day),
        `workflow_id`, `parent_version`, `hyperparameters`; fingerprinted with the run key.
    :param lineage: the manifest fields to record (templated; may hold XComArgs).
    :param tolerance: largest |Triton - offline| prediction difference accepted.
    """

    template_fields: Sequence[str] = ("settings", "blessing", "run_key", "lineage", "inputs")
    ui_color = "#ffe0b3"

    def __init__(self, *, settings: Any, blessing: dict[str, Any], run_key: str, lineage: dict[str, Any],
                 tolerance: float = 1e-4, inputs: dict[str, Any] | None = None, **kwargs):
        kwargs.setdefault("pool", DEPLOY_POOL)
        super().__init__(**kwargs)
        self.settings = settings
        self.inputs = inputs
        self.blessing = blessing
        self.run_key = run_key
        self.lineage = lineage
        self.tolerance = tolerance

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from .hooks.model_repository import ProductionMoved
        from .hooks.serving import SmokeTestFailed, promote
        from .hooks.triton import TritonModelError
        from .pipeline import pusher
        from .pipeline.config import Settings

        blessing = plain(self.blessing) if self.blessing else {}
        if pusher.unblessed(blessing):  # before the settings are read: nothing else matters
            raise AirflowFailException(pusher.unblessed(blessing))
        try:  # a bad queue delay or replica list fails here, before anything is pushed
            settings = Settings.of(self.settings)
            hook, tritons = repository(settings), triton_replicas(settings)   # an unresolved name is retried
        except ValueError as exc:
            raise AirflowFailException(f"{exc}. Nothing was deployed; fix the Variable and clear the task") from None
        production, inputs = hook.production_version(), self._run_inputs()
        decision, replaces = self._decide(hook, blessing, production, inputs)
        self.log.info("%s: %s", decision.action, decision.reason)
        if decision.action == pusher.REFUSE:
            raise AirflowFailException(decision.reason)
        version = decision.version
        if decision.action == pusher.SKIP_SUPERSEDED and decision.production_moved:
            raise AirflowSkipException(decision.reason)
        if decision.action == pusher.SKIP_SUPERSEDED:
            return {"version": version, "created": False, "promoted": False,
                    "version_dir": hook.layout.version_dir(version)}
        if decision.action == pusher.PUSH_NEW:
            version = self._push(hook, blessing, inputs, replaces, production, context)
        expected = production if decision.action == pusher.REUSE else decision.expected
        try:
            promoted = promote(hook, tritons, version, self.tolerance, resolve=lambda: triton_replicas(settings),
                               expected=expected)
        except ProductionMoved as moved:  # another deploy won the pointer after our read: Triton untouched
            reason = pusher.superseded(self.run_key, moved.expected, moved.actual)
            if decision.action != pusher.REUSE:
                hook.supersede(version, f"deploy {context['run_id']}: {reason}")
            raise AirflowSkipException(f"version {version}: {reason}") from None
        except (SmokeTestFailed, TritonModelError) as exc:
            if version != production:
                hook.reject(version, f"deploy {context['run_id']}: {exc}")
            raise AirflowFailException(
                f"version {version} was rolled back: {exc}. Production stays at version {production}.") from None
        removed = hook.prune(hook.layout.settings.serving.keep_versions)
        self.log.info("%s version %s serves on %d replica(s) (previous %s); smoke: %s; pruned: %s",
                      hook.layout.model_name, version, len(promoted["smoke"]["replicas"]),
                      promoted["previous_version"], promoted["smoke"], removed or "none")
        return {"version": version, "created": decision.action == pusher.PUSH_NEW, "promoted": True,
                "version_dir": hook.layout.version_dir(version), "previous_version": promoted["previous_version"],
                "smoke": promoted["smoke"], "pruned": removed}

    def _decide(self, hook, blessing: dict, production: int | None, inputs: dict | None):
        """What the repository holds for this run key, and the pusher's decision on it; with the
        `replaces` record (class doc) when the candidate replaces a version from other inputs."""
        from .pipeline import pusher
        from .pipeline.identity import changes

        version = hook.find_by_run_key(self.run_key, inputs["fingerprint"] if inputs else None)
        earlier = hook.find_by_run_key(self.run_key) if version is None and inputs else None
        before = hook.lineage(earlier).get("inputs") if earlier is not None else None
        what = changes(before, inputs) if earlier is not None else None
        decision = pusher.decide(blessing, self.run_key, production, version,
                                 rolled_back=version is not None and hook.is_rolled_back(version),
                                 earlier=earlier, changes=what)
        replaces = None if earlier is None else {"version": earlier, "fingerprint": (before or {}).get("fingerprint"),
                                                 "changes": what}
        return decision, replaces

    def _push(self, hook, blessing: dict, inputs: dict | None, replaces: dict | None, production: int | None,
              context) -> int:
        """The candidate as the next version, with its lineage; a storage error is retryable."""
        from datetime import datetime

        from airflow.sdk.exceptions import AirflowException

        from criteo_kernel.artifacts import SMOKE_ROWS

        from .hooks.storage import resolve_partition, retain_partition
        from .pipeline import pusher

        lineage = plain(self.lineage)
        if isinstance(lineage.get("validation"), dict):  # one day (incremental): same shape as a window
            lineage["validation"] = [lineage["validation"]]
        manifest = {
            **lineage, "run_key": self.run_key, "inputs": inputs, "replaces": replaces,
            "model": hook.layout.model_name, "package": blessing["package"],
            "blessing": {k: blessing.get(k) for k in ("blessed", "reasons", "candidate_auc", "baseline_auc",
                                                      "auc_floor", "max_auc_drop", pusher.BASELINE)},
            "code_revision": code_revision(), "dag_id": context["dag"].dag_id, "run_id": context["run_id"],
            "deployed_at": datetime.now(UTC).isoformat(),
        }
        extra = {SMOKE_ROWS: blessing["smoke_rows"]} if blessing.get("smoke_rows") else None
        try:
            # the package partition's committed attempt: what export published, read whole. The
            # lineage names its training artifacts, so a rerun of export must not collect it.
            package = resolve_partition(blessing["package"])
            retain_partition(package, f"{hook.layout.model_name}-{self.run_key}")
            version = hook.push(package, manifest, extra_files=extra)
        except OSError as exc:
            raise AirflowException(
                f"could not publish the new version into {hook.model_dir}: {type(exc).__name__}: {exc} "
                "(is the bucket full or read-only?). Nothing was published (a version appears only whole) "
                f"and production stays at version {production}; the task will be retried") from exc
        self.log.info("pushed %s version %s (parent %s); promoting it", hook.layout.model_name, version,
                      manifest.get("parent_version"))
        return version

    def _run_inputs(self) -> dict | None:
        from .pipeline.identity import run_inputs

        if not self.inputs:
            return None
        given = plain(self.inputs)
        return run_inputs(given.get("raw") or [], given.get("workflow_id"), given.get("parent_version"),
                          given.get("hyperparameters"))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["create-pool"]:
        sys.exit("usage: python -m operators.deploy create-pool")
    ensure_deploy_pool()
    print(f"pool {DEPLOY_POOL}: 1 slot")
