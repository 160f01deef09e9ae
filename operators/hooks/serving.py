"""Serving a model version: promotion, its smoke inference, rollback (the deploy operator's and
`criteo-mlops rollback`'s actions). It talks to the Triton hook and the model repository hook, and
takes every setting from its caller.

Promotion:

1. Triton must answer before anything changes (else: a retryable error, nothing touched);
2. the model's config.pbtxt is pointed at the version, with the dynamic batcher's queue delay the
   repository hook was given (see model_repository), and Triton is told to load the model
   (explicit model control): it loads that version and drops the old one;
3. smoke inference: the held-out rows saved by the evaluate step (`smoke.npz` in the version)
   go through Triton over gRPC; the predictions must equal the offline ones and the response
   must come from the new version.

If 2 or 3 fails, the pointer goes back to the previous version and Triton reloads it, so the
previous version keeps serving and the repository stays consistent.

Several Triton replicas (`replicas`, e.g. the headless Service of k8s/serving/base/triton.yaml): each is a server
of its own, so all must answer before step 2, and steps 2-3 run on each in turn; a failure on any
restores the previous version on every replica it reached. Then the replicas are listed again: one
that appeared meanwhile may have read the old pointer at start, so it loads and passes the smoke
inference too (`promote`'s `resolve`).
"""
from __future__ import annotations

import logging
from datetime import UTC

from .model_repository import CURRENT, ProductionMoved
from .triton import TritonHook, TritonUnavailable, replica_urls

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


def promote(hook, triton, version: int, tolerance: float = 1e-4, resolve=None, late_ready_s: float = 300.0,
            expected=CURRENT) -> dict:
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

    `expected`: the version that must still serve for this promotion to go ahead (None: none may
    serve yet); checked in the conditional write that moves the pointer (hook.set_production), so a
    deploy that lost a race raises ProductionMoved before any Triton is touched. Left out:
    whatever serves when the pointer is read.
    """
    tritons = list(triton) if isinstance(triton, (list, tuple)) else [triton]
    model = hook.layout.model_name
    for t in tritons:
        t.ensure_ready()
    previous = hook.set_production(version, expected)
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
        _restore(hook, touched, model, previous, version)
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


def replicas(spec: str, default_url: str) -> list[TritonHook]:
    """A TritonHook per Triton replica of `spec` (the setting criteo_triton_replicas; empty: the one
    server at `default_url`, criteo_triton_grpc_url); see operators.hooks.triton.replica_urls."""
    return [TritonHook(url) for url in replica_urls(spec, default_url)]


def _restore(hook, tritons: list, model: str, previous: int | None, version: int) -> None:
    """Point production back at `previous`, only if it is still the `version` this promotion wrote
    (compare-and-swap): a deploy that moved it since owns the pointer and Triton's load, so nothing
    here is undone over it."""
    try:
        if previous is None:
            hook.clear_production(expected=version)
        else:
            hook.set_production(previous, expected=version)
    except ProductionMoved as exc:
        log.error("not restoring %s version %s: %s; the deploy that moved it loads its own version", model,
                  previous, exc)
        return
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
        raise ValueError(f"version {to} is not a complete version of {hook.layout.model_name} "
                         f"(complete: {versions})")
    if to == current:
        raise ValueError(f"version {to} already serves")
    try:
        result = promote(hook, triton, to, resolve=resolve, expected=current)
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
