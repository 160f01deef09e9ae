"""prometheus-adapter's rule for the Triton HPA (k8s/prometheus-adapter/config.yaml), read and filled
the way the adapter fills it, for the tests and bench/bench_autoscale.py.

The adapter (kubernetes-sigs/prometheus-adapter v0.12.0, pkg/naming/metrics_query.go, Build)
executes the rule's metricsQuery as a Go template with `<<` `>>` delimiters. For a Pods metric of
the HPA it sets:
- Series: the series name the rule discovered;
- LabelMatchers: `namespace="NS"` (the namespace's label, LabelEq: `%s=%q`), then the pod label:
  `pod="NAME"` for one pod, `pod=~"A|B"` (LabelMatches: `%s=~%q`) for several, joined by ",";
- GroupBy: the pod label (`pod`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parent / "prometheus-adapter" / "config.yaml"


def rule() -> dict:
    """The one rule of the adapter's config file."""
    rules = yaml.safe_load(CONFIG.read_text())["rules"]
    if len(rules) != 1:
        raise ValueError(f"{CONFIG}: expected one rule (triton_queue_avg_us), found {len(rules)}")
    return rules[0]


def _label(name: str, value: str, regex: bool = False) -> str:
    # Go's %q of a plain string: a double-quoted string with backslash escapes, as JSON writes it.
    return f"{name}{'=~' if regex else '='}{json.dumps(value)}"


def metrics_query(namespace: str, pods: list[str], series: str = "nv_inference_queue_duration_us") -> str:
    """The rule's metricsQuery for these pods of one namespace, as the adapter sends it to Prometheus."""
    r = rule()
    overrides = r["resources"]["overrides"]
    ns_label = next(label for label, res in overrides.items() if res["resource"] == "namespace")
    pod_label = next(label for label, res in overrides.items() if res["resource"] == "pod")
    matchers = ",".join([_label(ns_label, namespace), _label(pod_label, "|".join(pods), regex=len(pods) > 1)])
    return fill(matchers, pod_label, series)


def fill(label_matchers: str, group_by: str, series: str = "nv_inference_queue_duration_us") -> str:
    """The rule's metricsQuery with its template fields set to these strings."""
    args = {"Series": series, "LabelMatchers": label_matchers, "GroupBy": group_by}
    query = re.sub(r"<<\s*\.(\w+)\s*>>", lambda m: args[m.group(1)], rule()["metricsQuery"])
    if "<<" in query:
        raise ValueError(f"{CONFIG}: metricsQuery uses a template field this reader does not fill: {query}")
    return query
