"""The settings registry: decided once per run, typed, checked; a failed read is never a default."""
from pathlib import Path

import pytest

from operators.pipeline import config
from operators.pipeline.config import REGISTRY, Settings, SettingsError

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[3] / "docs" / "settings.md"


def test_defaults_resolve_under_the_base_and_monitor_thresholds_stay_unset():
    s = Settings.with_values(criteo_base_url="gs://bucket/prefix/")
    assert s.storage.base_url == "gs://bucket/prefix"
    assert (s.storage.raw_url, s.storage.request_log_url) == ("gs://bucket/prefix/raw", "gs://bucket/prefix/request_log")
    assert s.storage.model_repository == "gs://bucket/prefix/model_repository"
    assert s.runtime.name == "local" and s.serving.keep_versions == 5 and s.landing.num_days == 24
    assert set(s.monitoring.thresholds.values()) == {None}      # so a Param can say where its value came from
    assert s.problems() == []


def test_the_plans_copy_gives_the_same_settings_and_a_foreign_one_is_refused():
    s = Settings.with_values(criteo_runtime="local", criteo_num_days="10")
    assert Settings.of(s.to_dict()) == s and Settings.of(s.to_dict()).landing.num_days == 10
    with pytest.raises(SettingsError, match=r"unknown \['criteo_old'\]"):
        Settings.of({**s.to_dict(), "criteo_old": "1"})


def test_problems_name_every_setting_that_cannot_work():
    bad = Settings.with_values(criteo_num_days="many", criteo_keep_versions="five", criteo_day0_date="01/01/2026")
    assert bad.problems() == ["criteo_day0_date='01/01/2026': expected a date, YYYY-MM-DD",
                              "criteo_num_days='many': expected a whole number of days",
                              "criteo_keep_versions='five': expected a whole number >= 1"]
    problems = Settings.with_values(criteo_raw_landing="whenever", criteo_raw_settle_s="-1").problems()
    assert problems == ["criteo_raw_landing='whenever': expected one of settle, manifest",
                        "criteo_raw_settle_s='-1': expected seconds >= 0"]


def test_the_runtime_checks_its_own_settings_after_the_registrys():
    from operators.runtime import problems

    assert problems(Settings.with_values(criteo_runtime="k8s")) == [
        "criteo_runtime='k8s': expected one of ('local', 'kubernetes', 'docker')"]
    assert "criteo_kubernetes_namespace is not set" in " ".join(problems(Settings.with_values(
        criteo_runtime="kubernetes")))
    assert "criteo_image_merlin is not set" in " ".join(problems(Settings.with_values(criteo_runtime="docker")))
    assert problems(Settings.with_values(criteo_runtime="docker", criteo_num_days="x")) == [
        "criteo_num_days='x': expected a whole number of days"]     # the registry's first


class Variables:
    """Airflow's Task SDK Variable as seen from inside a task: `keys` lists what exists, `get` answers
    None for a Variable that does not exist and also for one whose read failed."""

    def __init__(self, existing, failing=(), keys_fail=False):
        self.existing, self.failing, self.keys_fail, self.reads = existing, set(failing), keys_fail, []

    def install(self, monkeypatch):
        import airflow.sdk

        monkeypatch.setattr(config, "in_task", lambda: True)
        monkeypatch.setattr(airflow.sdk.Variable, "keys", classmethod(lambda cls, prefix=None: self.keys(prefix)))
        monkeypatch.setattr(airflow.sdk.Variable, "get", classmethod(lambda cls, key, default=None: self.get(key)))

    def keys(self, prefix):
        if self.keys_fail:
            raise RuntimeError("API server: 503 Service Unavailable")
        return [k for k in self.existing if k.startswith(prefix)]

    def get(self, key):
        self.reads.append(key)
        return None if key in self.failing else self.existing.get(key)


def test_inside_a_task_a_variable_read_once_per_setting(monkeypatch):
    variables = Variables({"criteo_base_url": "gs://b/p", "criteo_runtime": "local"})
    variables.install(monkeypatch)
    s = Settings.load()
    assert s.storage.base_url == "gs://b/p" and s.storage.raw_url == "gs://b/p/raw"
    assert sorted(variables.reads) == sorted(config.VARIABLES)     # each Variable read once, none twice


def test_inside_a_task_a_failed_read_fails_naming_the_variable_not_the_default_bucket(monkeypatch):
    Variables({"criteo_base_url": "gs://prod/p"}, failing={"criteo_base_url"}).install(monkeypatch)
    with pytest.raises(config.SettingReadError, match="criteo_base_url exists but could not be read"):
        Settings.load()
    Variables({"criteo_base_url": "gs://prod/p"}, keys_fail=True).install(monkeypatch)
    with pytest.raises(config.SettingReadError, match="could not be listed .*503"):
        Settings.load()


def test_outside_a_task_the_environment_then_the_default(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_NUM_DAYS", "7")
    assert Settings.load().landing.num_days == 7
    monkeypatch.delenv("AIRFLOW_VAR_CRITEO_NUM_DAYS")
    assert Settings.load().landing.num_days == 24


def test_the_parse_time_environment_is_in_the_registry_and_never_a_variable(monkeypatch):
    monkeypatch.setenv("CRITEO_SENSOR_MODE", "poke")
    assert config.environment("CRITEO_SENSOR_MODE") == "poke"
    assert "CRITEO_SENSOR_MODE" not in config.VARIABLES
    with pytest.raises(KeyError, match="read once per run"):
        config.environment("criteo_base_url")


def test_one_registry_holds_every_kind():
    kinds = {s.kind for s in REGISTRY.values()}
    assert kinds == {"variable", "monitor", "environment"}
    monitor = [s for s in REGISTRY.values() if s.kind == "monitor"]
    assert len(monitor) == 7 and all(s.name.startswith("criteo_monitor_") and s.title for s in monitor)


def test_docs_settings_table_is_the_registry():
    """docs/settings.md's table is generated: `python -m operators.pipeline.config write-table docs/settings.md`."""
    text = DOCS.read_text()
    start, end = text.index(config.TABLE_BEGIN), text.index(config.TABLE_END) + len(config.TABLE_END)
    assert text[start:end] == config.table(), "regenerate: python -m operators.pipeline.config write-table " \
                                              "docs/settings.md"
    assert all(f"`{name}`" in text for name in REGISTRY)
