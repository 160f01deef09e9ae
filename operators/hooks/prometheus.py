"""A hook onto Prometheus's HTTP query API.

Errors come in two kinds, because callers treat them differently:

- `PrometheusUnavailable`: the server cannot be reached, timed out, or answered 5xx (down,
  restarting, wrong address). Nothing is known about the metric; waiting and asking again can help.
  The monitoring sensors log it and keep waiting.
- `PrometheusQueryError`: the server answered and rejected the query (bad PromQL, HTTP 400/422);
  the message is Prometheus's own. Asking again will not help.

What the monitoring sensors make of the results is in operators/pipeline/condition.py.

httpx is imported inside the methods: DAG files import operators/* at parse time.
Default address: the Airflow Variable `criteo_prometheus_url` (see `prometheus_url`).
"""
from __future__ import annotations

from typing import Any


class PrometheusUnavailable(RuntimeError):
    """Prometheus cannot be reached, timed out or failed (5xx); the message names the URL."""


class PrometheusQueryError(ValueError):
    """Prometheus rejected the query (bad PromQL); the message is Prometheus's error text."""


class PrometheusHook:
    """Queries one Prometheus server over its HTTP API (`/api/v1/query`, `/api/v1/query_range`).

    Results are Prometheus's `data.result` list: for `query`, `[{"metric": {...}, "value": [ts, "v"]}]`;
    for `query_range`, `[{"metric": {...}, "values": [[ts, "v"], ...]}]`.

    :param url: the server's base URL, e.g. "http://127.0.0.1:9090" (the run's criteo_prometheus_url).
    :param timeout_s: deadline of each HTTP request.
    """

    def __init__(self, url: str, timeout_s: float = 10.0):
        if not url:
            raise ValueError("PrometheusHook needs the server's URL (the run's criteo_prometheus_url)")
        self.url = url.rstrip("/")
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
