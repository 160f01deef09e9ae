"""
### Served traffic -> training data (daily)

Closes the loop: the day's request log (every row Triton scored, with its label once known,
written by the inference client) becomes the raw Criteo day `day_N` that the training DAGs
extract, validate and train on.

```
plan -> request_log_to_day (images/monitoring: request_log_to_day)
```

- **plan**: the logical date's Criteo day N (`criteo_day0_date`), the request log
  (`criteo_request_log_url`, default `<base>/request_log`) and the raw folder (`criteo_raw_url`).
- **request_log_to_day**: joins the requests and labels of the date's hour partitions, keeps one
  copy of rows logged twice, and writes `day_N` whole (written elsewhere, then moved) in the exact
  Criteo format. Fewer than 99% of the day's requests labelled means labels are still arriving:
  the task fails and is retried (every 30 min, 6 times). An existing `day_N` with other content is
  never replaced: the task fails saying so (no retry).

Run for date D after D ends (Airflow's daily interval), so the day's traffic is complete; then
`criteo_incremental_training` for D finds `day_N` in the raw folder.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from operators.step import CriteoStepOperator
from operators.tasks.defaults import DEFAULT_ARGS, LABEL_RETRY_DELAY
from operators.tasks.request_log import plan_request_log_day

with DAG(
    dag_id="criteo_request_log_to_raw",
    description="Daily: the day's request log (served traffic + labels) -> raw/day_N, the next retrain's data",
    schedule="@daily",
    start_date=datetime(2026, 1, 2),
    catchup=False,
    max_active_runs=1,
    # Late labels are waited out by retries: 6 more tries, 30 min apart (CRITEO_LABEL_RETRY_DELAY_S).
    default_args={**DEFAULT_ARGS, "retries": 6, "retry_exponential_backoff": False, "retry_delay": LABEL_RETRY_DELAY},
    doc_md=__doc__,
    tags=["criteo", "monitoring", "data"],
) as dag:
    plan = plan_request_log_day()
    CriteoStepOperator(task_id="request_log_to_day", step="request_log_to_day", settings=plan["settings"],
                       arguments=plan["to_day_args"],
                       doc_md="The day's requests joined with their labels, written as raw/day_N.")
