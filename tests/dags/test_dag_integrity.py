import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
DAG_FILES = sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
HEAVY = {"great_expectations", "nvtabular", "torch", "tritonclient", "kubernetes", "onnxruntime",
         "pandas", "numpy", "pyarrow", "google.cloud"}


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= {"criteo_incremental_training", "criteo_full_retrain", "model_monitoring",
                                   "criteo_request_log_to_raw"}


@pytest.mark.parametrize("dag_id", ["criteo_incremental_training", "criteo_full_retrain", "model_monitoring",
                                    "criteo_request_log_to_raw"])
def test_every_dag_is_documented_and_owned(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag.doc_md and len(dag.doc_md) > 200 and dag.description
    assert dag.tags and "criteo" in dag.tags and dag.max_active_runs == 1 and not dag.catchup
    for task in dag.tasks:
        assert task.owner == "ml-platform" and task.retries is not None, task.task_id


def test_request_log_dag_turns_the_logical_dates_day_into_a_raw_day(dagbag):
    dag = dagbag.get_dag("criteo_request_log_to_raw")
    step = dag.get_task("request_log_to_day")
    assert step.step == "request_log_to_day" and step.retries == 6  # late labels are waited out by retries
    assert dag.get_task("plan_request_log_day").downstream_task_ids == {"request_log_to_day"}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parsing_a_dag_file_loads_nothing_heavy_beyond_airflow(path):
    """In a fresh interpreter: what the DAG file adds to sys.modules beyond Airflow's own imports
    (the ORM too: TriggerDagRunOperator's module pulls it in, ~150 ms per parse)."""
    import subprocess
    import sys

    code = f"""
import sys, runpy
from airflow.sdk import DAG, Param, task  # Airflow's own cost, the baseline
before = set(sys.modules)
sys.path.insert(0, {str(path.parent.parent)!r})
runpy.run_path({str(path)!r})
heavy = {sorted(HEAVY | {"httpx", "prometheus_client", "fsspec", "sqlalchemy.orm", "airflow.models.dagrun"})!r}
print(sorted(m for m in set(sys.modules) - before if any(m == h or m.startswith(h + ".") for h in heavy)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", f"{path.name} loads {out.stdout.strip().splitlines()[-1]}"


@pytest.mark.parametrize("dag_id", ["criteo_incremental_training", "criteo_full_retrain"])
def test_dag_conventions(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag.doc_md and len(dag.doc_md) > 200
    assert dag.tags and "criteo" in dag.tags
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.owner == "ml-platform", task.task_id
        assert task.retries is not None, task.task_id
    # data errors are not retried; infrastructure errors are
    assert dag.get_task("validate").retries == 0
    assert dag.get_task("train").retries >= 1
    # the gate sits between evaluation and deployment
    assert "blessing_gate" in dag.get_task("deploy").upstream_task_ids
    assert dag.get_task("deploy").trigger_rule == "all_success"
    assert "evaluate" in dag.get_task("blessing_gate").upstream_task_ids


def test_incremental_runs_apply_in_order(dagbag):
    dag = dagbag.get_dag("criteo_incremental_training")
    # every run starts by waiting for the day before; nothing depends on its own past (which would
    # make `airflow backfill create` refuse to run without a reprocess flag)
    assert dag.get_task("wait_for_previous_day").downstream_task_ids == {"plan_incremental_run"}
    assert [t.task_id for t in dag.roots] == ["wait_for_previous_day"]
    assert not any(t.depends_on_past for t in dag.tasks)
    assert "preprocess" in dag.get_task("validate").downstream_task_ids


def test_full_retrain_trigger_form_has_typed_params(dagbag):
    params = dagbag.get_dag("criteo_full_retrain").params
    for name, typ in [("window_days", "integer"), ("epochs", "integer"), ("batch_size", "integer"),
                      ("learning_rate", "number"), ("end_day", "integer")]:
        p = params.get_param(name)
        assert p.schema["type"] == typ and p.description, name


@pytest.mark.parametrize("dag_id", ["criteo_full_retrain", "criteo_incremental_training"])
def test_both_training_dags_let_the_user_choose_the_trainer(dagbag, dag_id):
    p = dagbag.get_dag(dag_id).params.get_param("trainer")
    assert p.value == "auto" and p.schema["enum"] == ["auto", "pytorch", "hugectr"]
    assert "hugectr on criteo_runtime=kubernetes" in p.description and "full retrain" in p.description


@pytest.mark.parametrize("dag_id", ["criteo_full_retrain", "criteo_incremental_training"])
def test_both_training_dags_let_the_user_choose_the_precision(dagbag, dag_id):
    p = dagbag.get_dag(dag_id).params.get_param("precision")
    assert p.value == "fp32" and p.schema["enum"] == ["fp32", "bf16"]
    assert "bfloat16 autocast" in p.description and "hugectr trainer refuses bf16" in p.description


def test_dag_graph_has_no_cycles(dagbag):
    for dag in dagbag.dags.values():
        # topological order exists only for an acyclic graph
        assert len(dag.topological_sort()) == len(dag.tasks)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_do_not_import_heavy_libraries_at_module_level(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for n in names:
            assert not any(n == h or n.startswith(h + ".") for h in HEAVY), f"{path.name} imports {n}"


@pytest.mark.parametrize("dag_id", ["criteo_incremental_training", "criteo_full_retrain"])
def test_the_shared_tail_is_a_task_group_and_artifacts_flow_from_upstream(dagbag, dag_id):
    """The graph shows train_evaluate_deploy as a group (task ids unchanged), and each step takes its
    inputs from its upstream steps' declared outputs, not from paths computed in advance."""
    from airflow.sdk.definitions.xcom_arg import XComArg

    dag = dagbag.get_dag(dag_id)
    group = dag.task_group.children["train_evaluate_deploy"]
    assert sorted(group.children) == ["blessing_gate", "deploy", "evaluate", "export", "preprocess", "train",
                                      "validate_processed"]

    def source(task_id, flag):
        """(upstream task, XCom key) a step's flag comes from."""
        ((op, key),) = XComArg.iter_xcom_references(dag.get_task(task_id).inputs[flag])
        return op.task_id, key

    if dag_id == "criteo_incremental_training":
        assert source("extract", "--input") == ("wait_for_raw_day", "return_value")
        assert source("validate", "--input") == ("extract", "output")
    else:  # mapped per day: each day's plan zipped with what its upstream produced
        def expanded_from(task_id):
            return {(op.task_id, key) for op, key in dag.get_task(task_id).expand_input.iter_references()}

        assert expanded_from("extract") == {("wait_for_raw_days", "return_value"), ("per_day_plans", "return_value")}
        assert expanded_from("validate") == {("extract", "return_value"), ("per_day_plans", "return_value")}
        assert source("learn_reference", "--profiles") == ("validate", "profile")
    assert source("train", "--train") == ("preprocess", "partitions")
    assert source("validate_processed", "--input") == ("preprocess", "partitions")
    assert source("export", "--checkpoint") == ("train", "checkpoint")
    # the plan chooses the trainer, so the train task's step comes from it
    ((op, key),) = XComArg.iter_xcom_references(dag.get_task("train").step)
    train = dag.get_task("train")
    assert key == "train_step" and op.task_id.startswith("plan_") and op.task_id in train.upstream_task_ids
    assert source("export", "--workflow") == ("preprocess", "workflow")
    assert source("evaluate", "--candidate") == ("export", "package")
    # deploy ships what the blessing names; the blessing judges evaluate's result
    ((gate, key),) = XComArg.iter_xcom_references(dag.get_task("deploy").blessing)
    assert (gate.task_id, key) == ("blessing_gate", "return_value")
    assert "evaluate" in dag.get_task("blessing_gate").upstream_task_ids
    # the step outputs downstream tasks consume are declared in the catalogue
    from operators.runtime.catalogue import STEPS

    assert {"partitions", "workflow"} <= set(STEPS["preprocess"].outputs)
    assert {"candidate", "smoke_rows"} <= set(STEPS["evaluate"].outputs)


def test_every_deploy_task_runs_in_the_deploy_pool(dagbag):
    """Deploys of all DAGs take turns (one slot); the compare-and-swap keeps a race correct anyway."""
    from operators.deploy import DEPLOY_POOL, DeployModelOperator

    deploys = [(dag_id, t.task_id, t.pool) for dag_id in dagbag.dag_ids for t in dagbag.get_dag(dag_id).tasks
               if isinstance(t, DeployModelOperator)]
    assert {dag_id for dag_id, _, _ in deploys} >= {"criteo_incremental_training", "criteo_full_retrain"}
    assert all(pool == DEPLOY_POOL for _, _, pool in deploys), deploys
