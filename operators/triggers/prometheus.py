"""Triggers of the deferrable sensors: they wait in the triggerer's event loop, not in a worker slot.

`PrometheusConditionTrigger` polls Prometheus until a PromQL expression has stayed below (or above)
a threshold for a sustained window, or until its own deadline. It owns that deadline (an absolute
time, serialized with it), so a restarted triggerer resumes the same wait, and the behaviour is
the same in the real triggerer and under `dag.test()`, which runs triggers inline without
enforcing the task's defer timeout.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class PrometheusConditionTrigger(BaseTrigger):
    """Fire when `query <op> threshold` held at every step of the last `sustained_s` seconds.

    Each poll runs a range query over the last `sustained_s` seconds (step `max(1, sustained_s/10)`)
    and evaluates it with `operators.pipeline.condition.evaluate_condition`: the condition holds only when
    every step satisfies it and at least `min_coverage` of the steps have data.

    Never fires on missing information: when Prometheus is unreachable or the series has no samples
    yet, it logs why (the URL and error, or "no samples for <query> yet") and keeps waiting. A query
    Prometheus rejects (bad PromQL) ends the wait at once with an "error" event.

    Events: `{"status": "fired", "value", "worst", "labels", "query", "reason", ...}`,
    `{"status": "timeout", "last_reason", ...}` at the deadline, `{"status": "error", "message", ...}`.

    :param prometheus_url: Prometheus base URL, e.g. "http://127.0.0.1:9090".
    :param query: the PromQL expression (one series, ideally).
    :param op: "<" (fire when it stays below the threshold) or ">" (stays above).
    :param threshold: the value to compare with.
    :param sustained_s: how long the condition must have held, in seconds.
    :param poll_interval_s: seconds between evaluations.
    :param timeout_s: how long to wait at most, from the first poll (unless `deadline` is given).
    :param deadline: absolute end of the wait (unix seconds); set by the sensor when it defers.
    :param min_coverage: share of the window's steps that must have data.
    :param http_timeout_s: deadline of each HTTP request to Prometheus.
    """

    def __init__(self, *, prometheus_url: str, query: str, op: str, threshold: float, sustained_s: float,
                 poll_interval_s: float = 60.0, timeout_s: float = 3600.0, deadline: float | None = None,
                 min_coverage: float = 0.8, http_timeout_s: float = 10.0):
        super().__init__()
        if op not in ("<", ">"):
            raise ValueError(f"op must be '<' or '>', got {op!r}")
        self.prometheus_url = prometheus_url.rstrip("/")
        self.query = query
        self.op = op
        self.threshold = float(threshold)
        self.sustained_s = float(sustained_s)
        self.poll_interval_s = float(poll_interval_s)
        self.timeout_s = float(timeout_s)
        self.deadline = float(deadline) if deadline is not None else None
        self.min_coverage = float(min_coverage)
        self.http_timeout_s = float(http_timeout_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            # The public path (operators/triggers/__init__.py), stored with a deferred task: kept
            # stable, so a trigger in the database still imports after modules move.
            "operators.triggers.PrometheusConditionTrigger",
            {
                "prometheus_url": self.prometheus_url,
                "query": self.query,
                "op": self.op,
                "threshold": self.threshold,
                "sustained_s": self.sustained_s,
                "poll_interval_s": self.poll_interval_s,
                "timeout_s": self.timeout_s,
                "deadline": self.deadline,
                "min_coverage": self.min_coverage,
                "http_timeout_s": self.http_timeout_s,
            },
        )

    def _describe(self) -> str:
        return f"{self.query} {self.op} {self.threshold:g} for {self.sustained_s:g}s"

    def _event(self, status: str, **extra) -> TriggerEvent:
        return TriggerEvent({
            "status": status, "query": self.query, "op": self.op, "threshold": self.threshold,
            "sustained_s": self.sustained_s, "prometheus_url": self.prometheus_url,
            "at": datetime.now(UTC).isoformat(timespec="seconds"), **extra})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from ..hooks.prometheus import PrometheusHook, PrometheusQueryError, PrometheusUnavailable
        from ..pipeline.condition import evaluate_condition, range_step

        deadline = self.deadline if self.deadline is not None else time.time() + self.timeout_s
        hook = PrometheusHook(self.prometheus_url, timeout_s=self.http_timeout_s)
        step = range_step(self.sustained_s)
        polls, last_reason = 0, "not evaluated yet"
        self.log.info("waiting until %s (Prometheus %s, polling every %gs, deadline in %.0fs)",
                      self._describe(), self.prometheus_url, self.poll_interval_s, deadline - time.time())
        while True:
            polls += 1
            end = time.time()
            start = end - self.sustained_s
            try:
                result = await hook.aquery_range(self.query, start, end, step)
            except PrometheusUnavailable as exc:
                last_reason = str(exc)
                self.log.warning("cannot evaluate %s: %s; not firing, still waiting", self._describe(), exc)
            except PrometheusQueryError as exc:
                self.log.error("%s", exc)
                yield self._event("error", message=str(exc), polls=polls)
                return
            else:
                verdict = evaluate_condition(result, self.op, self.threshold, start, end, step,
                                             self.min_coverage, query=self.query)
                if verdict.met:
                    self.log.info("condition met: %s", verdict.reason)
                    yield self._event("fired", value=verdict.value, worst=verdict.worst, labels=verdict.labels,
                                      coverage=verdict.coverage, reason=verdict.reason, polls=polls)
                    return
                last_reason = verdict.reason
                if not result:
                    self.log.warning("%s (Prometheus %s); not firing, still waiting", verdict.reason,
                                     self.prometheus_url)
                else:
                    self.log.info("not met yet: %s", verdict.reason)
            remaining = deadline - time.time()
            if remaining <= 0:
                self.log.info("deadline reached without %s; last check: %s", self._describe(), last_reason)
                yield self._event("timeout", last_reason=last_reason, timeout_s=self.timeout_s, polls=polls)
                return
            await asyncio.sleep(min(self.poll_interval_s, remaining))
