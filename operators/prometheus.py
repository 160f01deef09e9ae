"""A hook onto Prometheus's HTTP query API, and the condition the monitoring sensors wait for.

Errors come in two kinds, because callers treat them differently:

- `PrometheusUnavailable`: the server cannot be reached, timed out, or answered 5xx (down,
  restarting, wrong address). Nothing is known about the metric; waiting and asking again can help.
  The monitoring sensors log it and keep waiting.
- `PrometheusQueryError`: the server answered and rejected the query (bad PromQL, HTTP 400/422);
  the message is Prometheus's own. Asking again will not help.

`evaluate_condition` is the one place that decides whether "metric < / > threshold, sustained
for the window" holds for a range-query result: the deferrable trigger and the poking sensor both
call it, so both fire on exactly the same data.

httpx is imported inside the methods: DAG files import operators/* at parse time.
Default address: the Airflow Variable `criteo_prometheus_url` (see `prometheus_url`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .config import _var

DEFAULT_URL = "http://127.0.0.1:9090"
OPERATORS = {"<": lambda v, t: v < t, ">": lambda v, t: v > t}


class PrometheusUnavailable(RuntimeError):
    """Prometheus cannot be reached, timed out or failed (5xx); the message names the URL."""


class PrometheusQueryError(ValueError):
    """Prometheus rejected the query (bad PromQL); the message is Prometheus's error text."""


def prometheus_url() -> str:
    """The Prometheus base URL from the Airflow Variable `criteo_prometheus_url`."""
    return _var("criteo_prometheus_url", DEFAULT_URL).rstrip("/")


def range_step(sustained_s: float) -> float:
    """Step of the range query over a sustained window: about 10 points, at least 1 s apart."""
    return max(1.0, float(sustained_s) / 10.0)


class PrometheusHook:
    """Queries one Prometheus server over its HTTP API (`/api/v1/query`, `/api/v1/query_range`).

    Results are Prometheus's `data.result` list: for `query`, `[{"metric": {...}, "value": [ts, "v"]}]`;
    for `query_range`, `[{"metric": {...}, "values": [[ts, "v"], ...]}]`.

    :param url: the server's base URL, e.g. "http://127.0.0.1:9090" (default: the Variable
        `criteo_prometheus_url`, else http://127.0.0.1:9090).
    :param timeout_s: deadline of each HTTP request.
    """

    def __init__(self, url: str | None = None, timeout_s: float = 10.0):
        self.url = (url or prometheus_url()).rstrip("/")
        self.timeout_s = float(timeout_s)

    # -- sync -------------------------------------------------------------------------------
    def query(self, promql: str, time: float | None = None) -> list[dict]:
        """Instant query: one sample per series at `time` (default: now)."""
        params: dict[str, Any] = {"query": promql}
        if time is not None:
            params["time"] = f"{float(time):.3f}"
        return self._get("/api/v1/query", params)

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict]:
        """Range query: each series' values at start, start+step, ... <= end (unix seconds)."""
        return self._get("/api/v1/query_range", self._range_params(promql, start, end, step))

    def _get(self, path: str, params: dict) -> list[dict]:
        import httpx

        try:
            resp = httpx.get(self.url + path, params=params, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        return self._result(resp, params["query"])

    # -- async (for the triggerer) ------------------------------------------------------------
    async def aquery(self, promql: str, time: float | None = None) -> list[dict]:
        params: dict[str, Any] = {"query": promql}
        if time is not None:
            params["time"] = f"{float(time):.3f}"
        return await self._aget("/api/v1/query", params)

    async def aquery_range(self, promql: str, start: float, end: float, step: float) -> list[dict]:
        """`query_range` without blocking the event loop (httpx.AsyncClient)."""
        return await self._aget("/api/v1/query_range", self._range_params(promql, start, end, step))

    async def _aget(self, path: str, params: dict) -> list[dict]:
        import httpx

        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.get(self.url + path, params=params)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        return self._result(resp, params["query"])

    # -- shared -------------------------------------------------------------------------------
    @staticmethod
    def _range_params(promql: str, start: float, end: float, step: float) -> dict:
        if float(step) <= 0:
            raise ValueError(f"step must be positive, got {step}")
        return {"query": promql, "start": f"{float(start):.3f}", "end": f"{float(end):.3f}",
                "step": f"{float(step):g}"}

    def _unavailable(self, exc: Exception) -> PrometheusUnavailable:
        kind = type(exc).__name__
        return PrometheusUnavailable(f"Prometheus at {self.url} is unreachable ({kind}: {exc or 'no detail'})")

    def _result(self, resp, promql: str) -> list[dict]:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 500:
            detail = body.get("error") if isinstance(body, dict) else resp.text[:200]
            raise PrometheusUnavailable(f"Prometheus at {self.url} failed: HTTP {resp.status_code} {detail}")
        if isinstance(body, dict) and body.get("status") == "error":
            # 400 bad_data (parse error), 422 execution: the query itself is wrong
            raise PrometheusQueryError(f"Prometheus at {self.url} rejected {promql!r}: "
                                       f"{body.get('errorType', 'error')}: {body.get('error')}")
        if resp.status_code != 200 or not isinstance(body, dict) or "data" not in body:
            raise PrometheusUnavailable(f"{self.url} did not answer like Prometheus: HTTP {resp.status_code} "
                                        f"{resp.text[:200]!r}")
        return list(body["data"].get("result") or [])


@dataclass
class ConditionResult:
    """Whether a sustained condition holds, and why (what the sensors log and return)."""

    met: bool
    reason: str
    value: float | None = None          # latest value of the series that decided
    worst: float | None = None          # its value closest to (or beyond) the threshold's other side
    labels: dict = field(default_factory=dict)
    coverage: float = 0.0               # share of the window's steps that had a value

    def as_dict(self) -> dict:
        return {"met": self.met, "reason": self.reason, "value": self.value, "worst": self.worst,
                "labels": self.labels, "coverage": round(self.coverage, 3)}


_SCRAPE_LABELS = ("__name__", "instance", "job")


def _fmt_labels(labels: dict) -> str:
    """The series as `name{label="v",...}`, without the scrape's instance/job labels (noise in a log)."""
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k not in _SCRAPE_LABELS)
    return f"{labels.get('__name__', '')}{{{shown}}}"


def evaluate_condition(result: list[dict], op: str, threshold: float, start: float, end: float, step: float,
                       min_coverage: float = 0.8, query: str = "") -> ConditionResult:
    """Does `value <op> threshold` hold at EVERY step of [start, end], with the data covering it?

    `result` is a range query's result over that window (`PrometheusHook.query_range`). A series
    meets the condition when at least `min_coverage` of the window's steps have a value and every
    value present satisfies it (NaN never does). The condition holds when any series meets it (a
    query selecting one series, as the monitoring sensors' do, has one).
    """
    if op not in OPERATORS:
        raise ValueError(f"op must be one of {sorted(OPERATORS)}, got {op!r}")
    threshold = float(threshold)
    expected = int(math.floor((float(end) - float(start)) / float(step) + 1e-9)) + 1
    if not result:
        return ConditionResult(False, f"no samples for {query or 'the query'} yet")
    check = OPERATORS[op]
    reasons = []
    for series in result:
        labels = dict(series.get("metric") or {})
        values = [float(v) for _, v in series.get("values") or []]
        coverage = min(1.0, len(values) / expected) if expected else 0.0
        if not values:
            reasons.append(f"{_fmt_labels(labels)}: no samples in the window")
            continue
        bad = [v for v in values if not check(v, threshold)]
        finite = [v for v in values if not math.isnan(v)]
        worst = ((max if op == "<" else min)(finite)) if finite else math.nan
        last = values[-1]
        if coverage + 1e-9 < min_coverage:
            reasons.append(f"{_fmt_labels(labels)}: only {len(values)} of {expected} steps of the "
                           f"{end - start:g}s window have data (need {min_coverage:.0%})")
        elif bad:
            reasons.append(f"{_fmt_labels(labels)}: {len(bad)} of {len(values)} steps not {op} {threshold:g} "
                           f"(last {last:.4g}, worst {worst:.4g})")
        else:
            return ConditionResult(True, f"{_fmt_labels(labels)} stayed {op} {threshold:g} for the whole "
                                         f"{end - start:g}s window ({len(values)} of {expected} steps, last "
                                         f"{last:.4g}, worst {worst:.4g})",
                                   value=last, worst=worst, labels=labels, coverage=coverage)
    first = result[0]
    first_values = [float(v) for _, v in first.get("values") or []]
    return ConditionResult(False, "; ".join(reasons), value=first_values[-1] if first_values else None,
                           labels=dict(first.get("metric") or {}),
                           coverage=min(1.0, len(first_values) / expected) if expected else 0.0)
