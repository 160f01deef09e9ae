"""model_monitoring's decisions as pure functions: whether to retrain, and with which settings."""
from datetime import UTC, datetime, timedelta

import pytest

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


FIRED = {"auc_degraded": {"status": "fired", "reason": 'criteo_rolling_auc{version="1"} stayed < 0.7'}}


@pytest.mark.unit
def test_no_sensor_fired_no_retrain():
    from operators.pipeline.retraining import decide

    d = decide({}, 0, None, NOW, 6, 3, 7)
    assert not d.trigger and d.conf is None and "no sensor fired" in d.reason


@pytest.mark.unit
def test_triggers_with_the_latest_day_and_the_window():
    from operators.pipeline.retraining import decide

    d = decide(FIRED, 0, None, NOW, 6, 9, 7)
    assert d.trigger
    assert d.conf == {"end_day": 9, "window_days": 7,
                      "reason": 'model_monitoring: auc_degraded fired: criteo_rolling_auc{version="1"} stayed < 0.7'}
    assert "never triggered before" in d.reason and "day_3..day_9" in d.reason
    both = decide({**FIRED, "drift_detected": {"status": "fired", "reason": "psi"}}, 0, None, NOW, 6, 1, 7)
    assert both.trigger and "drift_detected fired: psi" in both.conf["reason"] and "day_0..day_1" in both.reason


@pytest.mark.unit
def test_no_retrain_while_one_is_queued_or_running():
    from operators.pipeline.retraining import decide

    d = decide(FIRED, 1, None, NOW, 6, 9, 7)
    assert not d.trigger and "1 criteo_full_retrain run(s) already queued or running" in d.reason


@pytest.mark.unit
def test_cooldown():
    from operators.pipeline.retraining import decide

    recent = (NOW - timedelta(hours=2)).isoformat()
    d = decide(FIRED, 0, recent, NOW, 6, 9, 7)
    assert not d.trigger and "in cooldown" in d.reason and "2.00 h ago, cooldown 6 h, 240 min left" in d.reason
    old = (NOW - timedelta(hours=7)).isoformat()
    d = decide(FIRED, 0, old, NOW, 6, 9, 7)
    assert d.trigger and "7.00 h ago >= cooldown 6 h" in d.reason
    assert decide(FIRED, 0, "not a time", NOW, 6, 9, 7).trigger  # a broken value does not block forever
    assert decide(FIRED, 0, recent, NOW, 0, 9, 7).trigger        # cooldown 0: off


@pytest.mark.unit
def test_no_raw_day_no_retrain():
    from operators.pipeline.retraining import decide

    d = decide(FIRED, 0, None, NOW, 6, None, 7, raw_url="/bucket/raw")
    assert not d.trigger and "no raw Criteo day (day_N[.gz]) in /bucket/raw" in d.reason


@pytest.mark.unit
def test_settings_param_then_variable_then_default(monkeypatch):
    from operators.pipeline.config import Settings
    from operators.pipeline.retraining import resolve_settings

    variables = {"psi_threshold": "0.3", "sustained_s": "120"}
    s = resolve_settings({"auc_threshold": 0.65, "sustained_s": None}, variables)
    assert (s["auc_threshold"], s["psi_threshold"], s["sustained_s"], s["cooldown_h"]) == (0.65, 0.3, 120, 6.0)
    assert s["sources"]["auc_threshold"] == "param" and s["sources"]["cooldown_h"] == "default"
    assert s["sources"]["psi_threshold"] == "Variable criteo_monitor_psi_threshold"
    assert isinstance(s["sustained_s"], int) and isinstance(s["auc_threshold"], float)
    with pytest.raises(ValueError, match="setting cooldown_h: 'soon' .from Variable criteo_monitor_cooldown_h"):
        resolve_settings({}, {"cooldown_h": "soon"})
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_MONITOR_WINDOW_DAYS", "3")  # the real lookup: env outside a task
    assert resolve_settings({}, Settings.load().monitoring.thresholds)["window_days"] == 3


