"""Sensors on the served model's metrics in Prometheus (exported by the monitor, images/monitoring).

`PrometheusConditionSensor` waits until a PromQL expression stays below or above a threshold for a
sustained window. `RollingAUCSensor` and `FeatureDriftSensor` are it, ready-made for the monitor's
metrics contract (labels `model`, `version`):

- `criteo_rolling_auc{model,version}`: rolling AUC over the last labelled requests of a version;
- `criteo_max_feature_psi{model,version}`: the largest per-feature PSI against the version's
  training reference (per feature: `criteo_feature_psi{model,version,feature}`).

Deferrable by default: the wait runs in the triggerer
(`operators.triggers.prometheus.PrometheusConditionTrigger`), not in a worker slot. With
`deferrable=False` the sensor pokes with the same condition logic
(`operators.pipeline.condition.evaluate_condition`) through `operators.hooks.prometheus.PrometheusHook`.

Outcomes:

- fired: the task succeeds; its XCom is the event (`value`, `worst`, `labels`, `query`, `reason`, ...);
- not fired by the timeout: `AirflowSensorTimeout` with the last reason; with `soft_fail=True` the
  task ends skipped, after a log line saying it did not fire and why;
- Prometheus unreachable, or no samples yet: logged, never a fire and never a failure; the sensor
  keeps waiting (and so times out, i.e. is skipped with soft_fail, if it stays that way);
- a query Prometheus rejects (bad PromQL): the task fails with Prometheus's error text, even with
  `soft_fail` (a configuration error must not look like "all is well").
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.bases.sensor import PokeReturnValue

from criteo_kernel import metric_names


def promql_string(value: Any) -> str:
    """A PromQL string literal (label value) for `value`."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusConditionSensor(BaseSensorOperator):
    """Wait until `query <op> threshold` has held for `sustained_s` seconds, as Prometheus saw it.

    At each check, a range query over the last `sustained_s` seconds (step `max(1, sustained_s/10)`)
    must have a value at every step (at least `min_coverage` of them present) and every value must
    satisfy the condition: a brief dip does not fire, a metric that just appeared does not either.

    .. seealso:: operators/triggers/prometheus.py `PrometheusConditionTrigger`, the deferred half.

    :param query: the PromQL expression (templated); it should select one series.
    :param op: "<" fires when the value stays below the threshold (the default), ">" above it.
    :param threshold: the value to compare with (templated).
    :param sustained_s: how long the condition must hold, in seconds (templated).
    :param poll_interval_s: seconds between checks (templated; also the poke interval).
    :param timeout_s: how long to wait before giving up, in seconds (templated; overrides the
        sensor's `timeout`). The trigger owns this deadline.
    :param prometheus_url: Prometheus base URL (templated): the run's criteo_prometheus_url.
    :param min_coverage: share of the window's steps that must have data.
    :param deferrable: wait in the triggerer (default) instead of poking in a worker slot.
    """

    template_fields: Sequence[str] = ("query", "threshold", "sustained_s", "poll_interval_s", "timeout_s",
                                      "prometheus_url")
    ui_color = "#fbe3d0"
    op: str = "<"

    def __init__(self, *, query: str | None = None, op: str | None = None, threshold: float | str,
                 sustained_s: float | str, poll_interval_s: float | str = 60, timeout_s: float | str | None = None,
                 prometheus_url: str | None = None, min_coverage: float = 0.8, deferrable: bool = True,
                 **kwargs):
        if isinstance(poll_interval_s, (int, float)):
            kwargs.setdefault("poke_interval", poll_interval_s)
        if isinstance(timeout_s, (int, float)):
            kwargs.setdefault("timeout", timeout_s)
        super().__init__(**kwargs)
        if op is not None:
            self.op = op
        if self.op not in ("<", ">"):
            raise ValueError(f"op must be '<' or '>', got {self.op!r}")
        self.query = query
        self.threshold = threshold
        self.sustained_s = sustained_s
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.prometheus_url = prometheus_url
        self.min_coverage = float(min_coverage)
        self.deferrable = deferrable
        self._last_reason = "not evaluated yet"

    # -- what to watch (subclasses build the query) ----------------------------------------------
    def build_query(self) -> str:
        if not self.query:
            raise ValueError(f"{self.task_id}: no query given")
        return str(self.query)

    def _settings(self) -> dict:
        """The rendered settings as numbers; also applied to the sensor's poke interval and timeout."""
        if not self.prometheus_url:
            raise ValueError(f"{self.task_id}: no prometheus_url given (the run's criteo_prometheus_url)")
        s = {
            "query": self.build_query(),
            "threshold": float(self.threshold),
            "sustained_s": float(self.sustained_s),
            "poll_interval_s": float(self.poll_interval_s),
            "timeout_s": float(self.timeout_s) if self.timeout_s not in (None, "") else float(self.timeout),
            "prometheus_url": str(self.prometheus_url).rstrip("/"),
        }
        if s["sustained_s"] <= 0 or s["poll_interval_s"] <= 0 or s["timeout_s"] < 0:
            raise ValueError(f"{self.task_id}: sustained_s and poll_interval_s must be positive and timeout_s "
                             f"not negative, got {s}")
        self.poke_interval = s["poll_interval_s"]
        self.timeout = s["timeout_s"]
        return s

    def _describe(self, s: dict) -> str:
        return f"{s['query']} {self.op} {s['threshold']:g} sustained for {s['sustained_s']:g}s"

    # -- deferrable path ---------------------------------------------------------------------------
    def execute(self, context) -> Any:
        s = self._settings()
        self.log.info("waiting until %s (Prometheus %s, every %gs, timeout %gs, %s)", self._describe(s),
                      s["prometheus_url"], s["poll_interval_s"], s["timeout_s"],
                      "deferred to the triggerer" if self.deferrable else "poking")
        if not self.deferrable:
            return self._execute_poking(context, s)
        from ..triggers.prometheus import PrometheusConditionTrigger

        trigger = PrometheusConditionTrigger(
            prometheus_url=s["prometheus_url"], query=s["query"], op=self.op, threshold=s["threshold"],
            sustained_s=s["sustained_s"], poll_interval_s=s["poll_interval_s"], timeout_s=s["timeout_s"],
            deadline=time.time() + s["timeout_s"], min_coverage=self.min_coverage)
        # The trigger ends the wait itself at its deadline (with its last reason); the defer timeout
        # is only a backstop for a trigger that hangs.
        grace = max(60.0, 2 * s["poll_interval_s"])
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=s["timeout_s"] + grace))

    def execute_complete(self, context, event: dict | None = None) -> dict:
        """Resume after the trigger: the event when it fired; raise on timeout (skipped with soft_fail)."""
        from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

        from ..hooks.prometheus import PrometheusQueryError

        event = dict(event or {})
        status = event.get("status")
        if status == "fired":
            self.log.info("FIRED: %s", event.get("reason"))
            return event
        if status == "timeout":
            raise AirflowSensorTimeout(self._not_fired_message(event.get("query"), event.get("threshold"),
                                                               event.get("sustained_s"), event.get("timeout_s"),
                                                               event.get("last_reason")))
        if status == "error":
            raise PrometheusQueryError(event.get("message") or f"Prometheus rejected {event.get('query')}")
        raise AirflowException(f"{self.task_id}: unexpected trigger event {event}")

    def _not_fired_message(self, query, threshold, sustained_s, timeout_s, reason) -> str:
        msg = (f"DID NOT FIRE: {query} did not stay {self.op} {float(threshold):g} for {float(sustained_s):g}s "
               f"within {float(timeout_s):g}s; last check: {reason}")
        # Logged here because with soft_fail the exception only shows as "skipped".
        self.log.info("%s%s", msg, " (soft_fail: the task ends skipped)" if self.soft_fail else "")
        return msg

    # -- poking path (deferrable=False): same condition, same messages -----------------------------
    def poke(self, context) -> PokeReturnValue | bool:
        from ..hooks.prometheus import PrometheusHook, PrometheusUnavailable
        from ..pipeline.condition import evaluate_condition, range_step

        s = self._settings()
        step = range_step(s["sustained_s"])
        end = time.time()
        start = end - s["sustained_s"]
        try:
            result = PrometheusHook(s["prometheus_url"]).query_range(s["query"], start, end, step)
        except PrometheusUnavailable as exc:  # PrometheusQueryError propagates: the task fails
            self._last_reason = str(exc)
            self.log.warning("cannot evaluate %s: %s; not firing, still waiting", self._describe(s), exc)
            return False
        verdict = evaluate_condition(result, self.op, s["threshold"], start, end, step, self.min_coverage,
                                     query=s["query"])
        if verdict.met:
            self.log.info("FIRED: %s", verdict.reason)
            from datetime import datetime

            return PokeReturnValue(is_done=True, xcom_value={
                "status": "fired", "query": s["query"], "op": self.op, "threshold": s["threshold"],
                "sustained_s": s["sustained_s"], "prometheus_url": s["prometheus_url"],
                "at": datetime.now(UTC).isoformat(timespec="seconds"), "value": verdict.value,
                "worst": verdict.worst, "labels": verdict.labels, "coverage": verdict.coverage,
                "reason": verdict.reason})
        self._last_reason = verdict.reason
        (self.log.warning if not result else self.log.info)("not met yet: %s", verdict.reason)
        return False

    def _execute_poking(self, context, s: dict) -> Any:
        from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

        try:
            return super().execute(context)
        except (AirflowSensorTimeout, AirflowSkipException) as exc:
            if "timed out" not in str(exc):
                raise
            msg = self._not_fired_message(s["query"], s["threshold"], s["sustained_s"], s["timeout_s"],
                                          self._last_reason)
            raise type(exc)(msg) from None


class ModelMetricSensor(PrometheusConditionSensor):
    """A condition on one of the monitor's per-version metrics: `<metric>{model=..., version=...}`.

    Subclasses set `metric` and `op`.

    :param model: the model name (label `model`; templated).
    :param version: the model version (label `version`; templated, e.g. the production version's XCom).
    :param threshold: the value to compare with (templated).
    :param sustained_s: how long the condition must hold, in seconds (templated).

    The other parameters are `PrometheusConditionSensor`'s.
    """

    template_fields: Sequence[str] = ("model", "version", *PrometheusConditionSensor.template_fields)
    metric: str = ""

    def __init__(self, *, model: str, version: int | str, threshold: float | str, sustained_s: float | str,
                 **kwargs):
        kwargs.pop("op", None)  # fixed by the subclass
        super().__init__(threshold=threshold, sustained_s=sustained_s, **kwargs)
        self.model = model
        self.version = version

    def build_query(self) -> str:
        if self.version in (None, ""):
            raise ValueError(f"{self.task_id}: no model version to watch")
        return f"{self.metric}{{model={promql_string(self.model)},version={promql_string(self.version)}}}"


class RollingAUCSensor(ModelMetricSensor):
    """Wait until the served version's rolling AUC stays BELOW `threshold` for `sustained_s` seconds.

    Watches `criteo_rolling_auc{model=<model>,version=<version>}`, the monitor's AUC over the last
    labelled requests that version served.

    :param model: the model name (label `model`; templated).
    :param version: the model version (label `version`; templated, e.g. the production version's XCom).
    :param threshold: the AUC floor (templated).
    :param sustained_s: how long the AUC must stay below it, in seconds (templated).

    The other parameters are `PrometheusConditionSensor`'s (`poll_interval_s`, `timeout_s`,
    `prometheus_url`, `deferrable`, and the sensor's own such as `soft_fail`).
    """

    metric = metric_names.ROLLING_AUC
    op = "<"


class FeatureDriftSensor(ModelMetricSensor):
    """Wait until the served version's largest feature PSI stays ABOVE `threshold` for `sustained_s`.

    Watches `criteo_max_feature_psi{model=<model>,version=<version>}`, the largest population
    stability index of any feature of recent requests against the version's training reference
    (0.1: some drift, 0.25: significant). Per-feature values are `criteo_feature_psi{...,feature}`.

    :param model: the model name (label `model`; templated).
    :param version: the model version (label `version`; templated).
    :param threshold: the PSI above which the data counts as drifted (templated).
    :param sustained_s: how long it must stay above, in seconds (templated).

    The other parameters are `PrometheusConditionSensor`'s.
    """

    metric = metric_names.MAX_FEATURE_PSI
    op = ">"
