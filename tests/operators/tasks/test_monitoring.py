"""model_monitoring's tasks around the decisions: what to watch, from the model repository and the settings."""
import pytest

from tests.fixtures.model_repository import MODEL, make_bucket, with_policy


@pytest.mark.unit
def test_no_production_version_skips_the_run(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.tasks.monitoring import production_version

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(make_bucket(tmp_path, production=False)))
    with pytest.raises(AirflowSkipException, match=r"no production version of criteo_dcn in .*: nothing serves"):
        production_version.function(params={})
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_PROMETHEUS_URL", "http://127.0.0.1:1")
    (tmp_path / "model_repository" / MODEL / "config.pbtxt").write_text(with_policy(1))
    watch = production_version.function(params={"auc_threshold": 0.6})
    assert watch["version"] == "1" and watch["model"] == MODEL and watch["auc_threshold"] == 0.6
    assert watch["prometheus_url"] == "http://127.0.0.1:1" and watch["psi_threshold"] == 0.25
