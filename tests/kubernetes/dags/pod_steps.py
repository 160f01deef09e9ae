"""Single steps as DAGs, for the pod runtime's tests: each run decides its settings (run_settings),
then runs one CriteoStepOperator task on whichever runtime the Variables select, with its paths
under the bucket Variable."""
from datetime import datetime, timedelta

from airflow.sdk import DAG

from operators.step import CriteoStepOperator
from operators.tasks.defaults import run_settings

BASE = "{{ var.value.criteo_base_url }}"

with DAG("pod_step_synth", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         params={"rows": 300}):
    CriteoStepOperator(task_id="synth", step="synth", settings=run_settings(), retries=0,
                       arguments={"--out": f"{BASE}/raw", "--days": "0", "--rows": "{{ params.rows }}"})

with DAG("pod_step_missing_day", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    CriteoStepOperator(task_id="extract", step="extract", settings=run_settings(), retries=0,
                       arguments={"--input": f"{BASE}/raw", "--day": "7", "--output": f"{BASE}/extracted/day=7"})

with DAG("pod_step_bad_data", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    settings = run_settings()
    extract = CriteoStepOperator(task_id="extract", step="extract", settings=settings, retries=0,
                                 arguments={"--input": f"{BASE}/raw", "--day": "0",
                                            "--output": f"{BASE}/extracted/day=0"})
    # retries=3, but a failed expectation is bad data: the task fails at once
    validate = CriteoStepOperator(task_id="validate", step="validate", settings=settings, retries=3,
                                  arguments={"--suite": "raw_day", "--data-docs": f"{BASE}/data_docs",
                                             "--run-name": "pods"},
                                  inputs={"--input": extract.output["output"]})

with DAG("pod_step_synth_retry", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         params={"rows": 300}):
    CriteoStepOperator(task_id="synth", step="synth", settings=run_settings(), retries=1,
                       retry_delay=timedelta(seconds=1),
                       arguments={"--out": f"{BASE}/retry", "--days": "0", "--rows": "{{ params.rows }}"})
