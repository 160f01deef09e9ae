"""Deploy: push the blessed package into the Triton model repository as a new version, promote
it, and prove Triton serves it; roll back when it does not.

DeployModelOperator consumes the blessing (operators/pipeline/blessing.py): the blessed package and
the held-out rows its smoke inference uses are the evaluate step's outputs, named by the blessing.

Promotion, used by deploy and by `criteo-mlops rollback`:

1. Triton must answer before anything changes (else: a retryable error, nothing touched);
2. the model's config.pbtxt is pointed at the version, with the dynamic batcher's queue delay
   from the Variable criteo_triton_max_queue_delay_us (see model_repository), and Triton is told
   to load the model (explicit model control): it loads that version and drops the old one;
3. smoke inference: the held-out rows saved by the evaluate step (`smoke.npz` in the version)
   go through Triton over gRPC; the predictions must equal the offline ones and the response
   must come from the new version.

If 2 or 3 fails, the pointer goes back to the previous version and Triton reloads it, so the
previous version keeps serving and the repository stays consistent.

Several Triton replicas (the Variable criteo_triton_replicas, e.g. the headless Service of
k8s/serving.py): each is a server of its own, so all must answer before step 2, and steps 2-3
run on each in turn; a failure on any restores the previous version on every replica it reached.
Then the replicas are listed again: one that appeared meanwhile may have read the old pointer at
start, so it loads and passes the smoke inference too (`promote`'s `resolve`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from airflow.sdk import BaseOperator

from .hooks.triton import TritonUnavailable

log = logging.getLogger(__name__)


class SmokeTestFailed(RuntimeError):
    """Triton answered, but not with the offline predictions: the version must not serve."""


class LateReplicaNotReady(TritonUnavailable):
    """A replica that appeared during a promotion did not become ready: retry, restore nothing."""

    def __init__(self, url: str, model: str, version: int, wait_s: float):
        self.url, self.wait_s = url, wait_s
        super().__init__(f"{model} version {version} serves on every replica that answered, but {url} appeared "
                         f"during the promotion and was not ready after {wait_s:g}s; it may serve the previous "
                         "version once ready. The retry loads the version there")


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


def smoke_check(hook, triton, model: str, version: int, tolerance: float) -> dict:
    """Send the version's smoke rows to Triton; compare with their offline predictions."""
    import io

    import numpy as np

    from criteo_kernel.artifacts import SMOKE_ROWS
    from criteo_kernel.signature import CATEGORICAL_INPUT, DENSE_INPUT

    path = hook.model_dir / str(version) / SMOKE_ROWS
    if not path.exists():
        raise SmokeTestFailed(f"version {version} has no {SMOKE_ROWS} (held-out rows with offline predictions): "
                              "it cannot be verified, so it is not promoted")
    rows = np.load(io.BytesIO(path.read_bytes()))
    got, served = triton.infer(model, rows[DENSE_INPUT].astype(np.float32), rows[CATEGORICAL_INPUT].astype(np.int64))
    expected = rows["prediction"].astype(np.float32).reshape(-1)
    if served != version:
        raise SmokeTestFailed(f"smoke inference was answered by version {served}, not {version}")
    diff = float(np.max(np.abs(got.reshape(-1) - expected))) if len(expected) else 0.0
    if not diff <= tolerance:
        worst = int(np.argmax(np.abs(got.reshape(-1) - expected)))
        raise SmokeTestFailed(f"Triton's predictions differ from the offline ones by up to {diff:.3g} "
                              f"(> {tolerance:g}) on {len(expected)} held-out rows; row {worst}: "
                              f"Triton {float(got.reshape(-1)[worst]):.6f}, offline {float(expected[worst]):.6f}")
    log.info("smoke inference OK: %d held-out rows through Triton match the offline predictions "
             "(max |diff| %.2e) from version %s", len(expected), diff, version)
    return {"rows": int(len(expected)), "max_abs_diff": diff, "served_version": served}


def promote(hook, triton, version: int, tolerance: float = 1e-4, resolve=None, late_ready_s: float = 300.0) -> dict:
    """Make `version` the serving one (steps in the module doc); restore the previous on failure.

    `triton`: one TritonHook, or a list of them, one per replica (`replicas()`): explicit model
    control is per server, so every replica must answer before anything changes, then each loads
    the version and passes the smoke inference in turn. If one fails, the pointer goes back and
    every replica that loaded the new version (or tried to, and answered) loads the previous one.

    `resolve` (e.g. `replicas`): asked again once those replicas serve the version, for replicas
    that appeared meanwhile (a pod the autoscaler added, whose Triton may have read the old pointer
    at start). Each new one gets up to `late_ready_s` to become ready, then loads and passes the
    smoke inference like the others; one still not ready raises TritonUnavailable (retryable: the
    retry promotes again, reaching it) and changes nothing back, as every replica that answers
    serves the new version.
    """
    tritons = list(triton) if isinstance(triton, (list, tuple)) else [triton]
    model = hook.layout.cfg.model_name
    for t in tritons:
        t.ensure_ready()
    previous = hook.set_production(version)
    done, current, smokes, late = [], None, [], []
    pending, seen = list(tritons), {t.url for t in tritons}
    try:
        while pending:
            for t in pending:
                current = t
                if t in late:
                    _wait_ready(t, late_ready_s, model, version)
                t.load_model(model)
                smokes.append(smoke_check(hook, t, model, version, tolerance))
                done.append(t)
            current = None
            # The new pointer is in place: a replica that appears from now on reads it at start.
            pending = [t for t in _listed_again(resolve) if t.url not in seen]
            seen.update(t.url for t in pending)
            late.extend(pending)
            if pending:
                log.info("replicas appeared during the promotion: %s; loading version %s there too",
                         ", ".join(t.url for t in pending), version)
    except LateReplicaNotReady:
        raise  # every replica that answers serves the new version: nothing to restore
    except BaseException as exc:
        log.error("promotion of %s version %s failed on %s (%s); restoring version %s", model, version,
                  getattr(current, "url", "?"), exc, previous)
        # A replica that could not be reached changed nothing; one that answered may hold the new version.
        touched = done + ([current] if current is not None and not isinstance(exc, TritonUnavailable) else [])
        _restore(hook, touched, model, previous)
        raise
    smoke = {**smokes[0], "max_abs_diff": max(s["max_abs_diff"] for s in smokes),
             "replicas": [t.url for t in done]}
    return {"version": version, "previous_version": previous, "smoke": smoke}


def _listed_again(resolve) -> list:
    if resolve is None:
        return []
    try:
        return resolve()
    except TritonUnavailable as exc:  # DNS again: the listed replicas serve the version; do not undo that
        log.warning("could not list the Triton replicas again (%s): a replica that appeared during the promotion "
                    "may serve the previous version until its next load", exc)
        return []


def _wait_ready(triton, wait_s: float, model: str, version: int) -> None:
    import time

    deadline = time.monotonic() + wait_s
    while not triton.is_ready():
        if time.monotonic() >= deadline:
            raise LateReplicaNotReady(triton.url, model, version, wait_s)
        time.sleep(min(2.0, wait_s))


def replicas(spec: str | None = None) -> list:
    """A TritonHook per Triton replica of `spec` (default: the Variables; operators.hooks.triton.replica_urls)."""
    from .hooks.triton import TritonHook, replica_urls

    return [TritonHook(url) for url in replica_urls(spec)]


def _restore(hook, tritons: list, model: str, previous: int | None) -> None:
    if previous is None:
        hook.clear_production()
    else:
        hook.set_production(previous)
    # Replicas not in `tritons` keep what they had loaded, and read the restored pointer on their next load.
    for triton in tritons:
        try:
            if previous is None:
                triton.unload_model(model)
            else:
                triton.load_model(model)
            log.info("restored: %s is served by version %s again on %s", model, previous, triton.url)
        except Exception as exc:  # the pointer is restored; Triton still serves what it had before the failed load
            log.error("could not reload %s version %s on %s: %s", model, previous, triton.url, exc)


class DeployModelOperator(BaseOperator):
    """Publish the blessed package as the next version of the model in the Triton repository.

    Then promotes it on Triton (module doc): Triton loads it and a smoke inference on held-out rows
    must match the offline predictions, else the previous version is restored and the task fails
    without retry (the version keeps its files, marked `_REJECTED`). Triton unreachable: the task
    fails and retries; the version stays pushed but unpromoted, and the retry promotes it.
    After a promotion only the newest `criteo_keep_versions` versions are kept.

    Idempotent: if a version with the same run key and the same inputs (`inputs`' fingerprint,
    operators/pipeline/identity.py) exists, nothing is copied; it is promoted only if it never
    served (newer than production, not rolled back), so a rerun or backfill of an old run never
    takes production backwards. The same run key with other inputs (a corrected raw day) makes a
    new version; its lineage names the version it replaces and both fingerprints. If later runs
    have deployed since the replaced version, the task fails without retry instead: promoting the
    corrected day would drop what they learned (retrain the window instead).

    :param blessing: the blessing gate's verdict (templated; the gate's XCom): `blessed`, and the
        `package` (export's output, as evaluated) and `smoke_rows` (evaluate's held-out rows with
        their offline predictions) it names.
    :param run_key: identity of the training run: the day or window and settings (the plan's).
    :param inputs: what the run read (templated): `raw` (extract's `input` result per day),
        `workflow_id`, `parent_version`, `hyperparameters`; fingerprinted with the run key.
    :param lineage: the manifest fields to record (templated; may hold XComArgs).
    :param tolerance: largest |Triton - offline| prediction difference accepted.
    """

    template_fields: Sequence[str] = ("blessing", "run_key", "lineage", "inputs")
    ui_color = "#ffe0b3"

    def __init__(self, *, blessing: dict[str, Any], run_key: str, lineage: dict[str, Any], tolerance: float = 1e-4,
                 inputs: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.inputs = inputs
        self.blessing = blessing
        self.run_key = run_key
        self.lineage = lineage
        self.tolerance = tolerance

    def execute(self, context) -> dict:
        from datetime import datetime

        from airflow.sdk.exceptions import AirflowFailException

        from criteo_kernel.artifacts import SMOKE_ROWS

        from .hooks.model_repository import ModelRepositoryHook, queue_delay_setting
        from .hooks.triton import TritonModelError

        blessing = plain(self.blessing) if self.blessing else {}
        if not blessing.get("blessed") or not blessing.get("package"):
            raise AirflowFailException(f"deploy needs a blessed package; the blessing says {blessing!r}")
        try:  # promotion writes it into config.pbtxt: a bad value fails here, before anything is pushed
            queue_delay_setting()
            tritons = replicas()  # a name that does not resolve (yet) is retryable: TritonUnavailable
        except ValueError as exc:
            raise AirflowFailException(f"{exc}. Nothing was deployed; fix the Variable and clear the task") from None
        hook = ModelRepositoryHook.from_settings()
        layout, cfg = hook.layout, hook.layout.cfg
        production = hook.production_version()
        inputs = self._run_inputs()
        fingerprint = inputs["fingerprint"] if inputs else None
        version = hook.find_by_run_key(self.run_key, fingerprint)
        replaces = None if version is not None or not inputs else self._replaced(hook, production, inputs)
        if version is not None:
            if version == production:
                self.log.info("run %s is deployed as version %s, which serves; checking Triton serves it",
                              self.run_key, version)
            elif (production is not None and version < production) or hook.is_rolled_back(version):
                self.log.info("run %s was deployed as version %s, since superseded or rolled back (production: %s); "
                              "nothing to do", self.run_key, version, production)
                return {"version": version, "created": False, "promoted": False,
                        "version_dir": layout.version_dir(version)}
            else:
                self.log.info("run %s was pushed as version %s but never promoted; promoting it", self.run_key, version)
            created = False
        else:
            lineage = plain(self.lineage)
            if isinstance(lineage.get("validation"), dict):  # one day (incremental): same shape as a window
                lineage["validation"] = [lineage["validation"]]
            manifest = {
                **lineage,
                "run_key": self.run_key,
                "inputs": inputs,
                "replaces": replaces,
                "model": cfg.model_name,
                "package": blessing["package"],
                "blessing": {k: blessing.get(k) for k in ("blessed", "reasons", "candidate_auc", "baseline_auc",
                                                          "auc_floor", "max_auc_drop")},
                "code_revision": code_revision(),
                "dag_id": context["dag"].dag_id,
                "run_id": context["run_id"],
                "deployed_at": datetime.now(UTC).isoformat(),
            }
            extra = {SMOKE_ROWS: blessing["smoke_rows"]} if blessing.get("smoke_rows") else None
            try:
                version = hook.push(blessing["package"], manifest, extra_files=extra)
            except OSError as exc:
                from airflow.sdk.exceptions import AirflowException

                raise AirflowException(
                    f"could not publish the new version into {hook.model_dir}: {type(exc).__name__}: {exc} "
                    "(is the bucket full or read-only?). Nothing was published (a version appears only whole) "
                    f"and production stays at version {production}; the task will be retried") from exc
            created = True
            self.log.info("pushed %s version %s (parent %s); promoting it", cfg.model_name, version,
                          manifest.get("parent_version"))
        try:
            promoted = promote(hook, tritons, version, self.tolerance, resolve=replicas)
        except (SmokeTestFailed, TritonModelError) as exc:
            if version != production:
                hook.reject(version, f"deploy {context['run_id']}: {exc}")
            raise AirflowFailException(
                f"version {version} was rolled back: {exc}. Production stays at version {production}.") from None
        removed = hook.prune(cfg.keep_versions)
        self.log.info("%s version %s serves on %d replica(s) (previous %s); smoke: %s; pruned: %s", cfg.model_name,
                      version, len(promoted["smoke"]["replicas"]), promoted["previous_version"], promoted["smoke"],
                      removed or "none")
        return {"version": version, "created": created, "promoted": True, "version_dir": layout.version_dir(version),
                "previous_version": promoted["previous_version"], "smoke": promoted["smoke"], "pruned": removed}


    def _run_inputs(self) -> dict | None:
        from .pipeline.identity import run_inputs

        if not self.inputs:
            return None
        given = plain(self.inputs)
        return run_inputs(given.get("raw") or [], given.get("workflow_id"), given.get("parent_version"),
                          given.get("hyperparameters"))

    def _replaced(self, hook, production: int | None, inputs: dict) -> dict | None:
        """The version this run made from other inputs, if any: the new one replaces it (class doc)."""
        from airflow.sdk.exceptions import AirflowFailException

        from .pipeline.identity import changes

        earlier = hook.find_by_run_key(self.run_key)
        if earlier is None:
            return None
        before = hook.lineage(earlier).get("inputs")
        what = changes(before, inputs)
        if production is not None and production > earlier:
            raise AirflowFailException(
                f"run {self.run_key} made version {earlier}, and its inputs changed since ({'; '.join(what)}); but "
                f"production is version {production}, deployed after it, so promoting this candidate would drop "
                f"what the later runs learned. Production stays at version {production}. Retrain instead: "
                "trigger criteo_full_retrain over the window (or roll back and rerun the days in order).")
        self.log.info("run %s made version %s from other inputs (fingerprint %s -> %s): %s; this candidate becomes "
                      "a new version replacing it", self.run_key, earlier, (before or {}).get("fingerprint"),
                      inputs["fingerprint"], "; ".join(what))
        return {"version": earlier, "fingerprint": (before or {}).get("fingerprint"), "changes": what}


def rollback(hook, triton, to: int | None = None, reason: str = "rolled back by hand", resolve=None) -> dict:
    """Serve an earlier version again (default: the newest complete one below production).

    The version left is marked `_ROLLED_BACK`, so no rerun of its deploy promotes it again;
    `to` may also name a newer version (roll forward), which clears its mark.
    """
    current = hook.production_version()
    versions = hook.versions()
    if to is None:
        older = [v for v in versions if current is not None and v < current]
        if not older:
            raise ValueError(f"no complete version older than production ({current}) to roll back to; "
                             f"complete versions: {versions}")
        to = older[-1]
    if to not in versions:
        raise ValueError(f"version {to} is not a complete version of {hook.layout.cfg.model_name} "
                         f"(complete: {versions})")
    if to == current:
        raise ValueError(f"version {to} already serves")
    try:
        result = promote(hook, triton, to, resolve=resolve)
    except LateReplicaNotReady:
        _mark_rolled_back(hook, current, to, reason)  # the pointer moved: the version left stays left
        raise
    _mark_rolled_back(hook, current, to, reason)
    return result


def _mark_rolled_back(hook, current: int | None, to: int, reason: str) -> None:
    from datetime import datetime

    hook.clear_rolled_back(to)
    if current is not None:
        hook.mark_rolled_back(current, f"{datetime.now(UTC).isoformat()} {reason}: production {current} -> {to}")
