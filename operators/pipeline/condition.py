"""The condition the monitoring sensors wait for: "value < / > threshold, sustained for a window".

`evaluate_condition` is the one place that decides it for a Prometheus range-query result: the
deferrable trigger (operators/triggers/prometheus.py) and the poking sensor
(operators/sensors/prometheus.py) both call it, so both fire on exactly the same data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

OPERATORS = {"<": lambda v, t: v < t, ">": lambda v, t: v > t}


def range_step(sustained_s: float) -> float:
    """Step of the range query over a sustained window: about 10 points, at least 1 s apart."""
    return max(1.0, float(sustained_s) / 10.0)


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
