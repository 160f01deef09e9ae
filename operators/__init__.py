"""The Airflow side of the Criteo MLOps pipeline, split by role as the Airflow providers split theirs.

- `hooks/`: each talks to one system: the Triton repository (`model_repository`), a Triton server
  (`triton`), Prometheus (`prometheus`), the raw landing folder (`raw_data`), the data docs tree
  (`data_docs`); `storage` is the ObjectStoragePath seam they share.
- `step.py` (CriteoStepOperator) and `deploy.py` (DeployModelOperator): the operators.
- `sensors/`, `triggers/`, `links/`: waiting for a raw day or a metric (deferrable), and the
  "Data docs" extra link.
- `runtime/`: the step catalogue and where a step runs (local processes; pods).
- `pipeline/`: the pure logic: settings, layout, planning, the blessing, the sustained condition,
  the retrain decision.
- `tasks/`: the TaskFlow tasks and task groups the DAG files are made of.
- `cli.py`: the `criteo-mlops` command.

Nothing heavy is imported at module level anywhere here: DAG files import these modules when
they are parsed.
"""
