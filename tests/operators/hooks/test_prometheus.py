"""The Prometheus hook against a real Prometheus: instant and range queries, and the two kinds of error."""
import asyncio
import time

import pytest

from local_servers.process import free_port
from operators.hooks.prometheus import PrometheusHook, PrometheusQueryError, PrometheusUnavailable
from tests.fixtures.prometheus import AUC, auc_query

pytestmark = pytest.mark.integration


def test_hook_queries_and_errors(prom):
    hook = PrometheusHook(prom.url)
    (row,) = hook.query(auc_query("low"))
    assert float(row["value"][1]) == AUC["low"] and row["metric"]["version"] == "low"
    now = time.time()
    (rng,) = hook.query_range(auc_query("low"), now - 3, now, 1)
    assert rng["values"] and all(v == str(AUC["low"]) for _, v in rng["values"])
    with pytest.raises(PrometheusQueryError, match=r"rejected 'sum\(criteo_rolling_auc': bad_data: .*parse error"):
        hook.query("sum(criteo_rolling_auc")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusUnavailable, match=f"Prometheus at {dead} is unreachable"):
        PrometheusHook(dead).query("up")
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        asyncio.run(PrometheusHook(dead).aquery_range("up", now - 3, now, 1))
