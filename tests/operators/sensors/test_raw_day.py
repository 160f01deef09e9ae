import pytest

from operators.sensors.raw_day import RawDaySensor

pytestmark = pytest.mark.unit


def test_sensor_finds_plain_or_gz_day(tmp_path):
    s = RawDaySensor(task_id="s", raw_url=str(tmp_path), day=3, settle_s=0)
    assert s.poke({}) is False
    (tmp_path / "day_3.gz").write_bytes(b"")  # settled at once: settle_s=0
    res = s.poke({})
    assert res.is_done and res.xcom_value == f"{tmp_path}/day_3.gz"


def test_timeout_names_the_files_it_expected(tmp_path):
    from unittest import mock

    from airflow.sdk.exceptions import AirflowSensorTimeout

    s = RawDaySensor(task_id="s", raw_url=str(tmp_path), day=5, timeout=0.3, poke_interval=0.1, mode="poke")
    ti = mock.MagicMock(try_number=1, max_tries=0)  # only the context plumbing is faked
    expected = rf"raw Criteo day 5 never arrived whole: expected {tmp_path}/day_5 or {tmp_path}/day_5.gz"
    with pytest.raises(AirflowSensorTimeout, match=expected):
        s.execute({"ti": ti, "task_instance": ti})


def test_sensor_waits_for_a_day_without_manifest_to_settle(tmp_path):
    (tmp_path / "day_3").write_text("1\t2\n")
    s = RawDaySensor(task_id="s", raw_url=str(tmp_path), day=3, settle_s=3600)
    assert s.poke({}) is False
    assert RawDaySensor(task_id="s", raw_url=str(tmp_path), day=3, settle_s=0).poke({}).is_done
    from criteo_kernel.landing import write_manifest

    write_manifest(str(tmp_path / "day_3"))  # the writer's last step: landed now, settled or not
    assert s.poke({}).xcom_value == f"{tmp_path}/day_3"


def test_a_directory_fails_the_sensor_at_once_without_retry(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    (tmp_path / "day_3").mkdir()
    with pytest.raises(AirflowFailException, match=r"day_3 is a directory, not a raw day file.*clear the day's run"):
        RawDaySensor(task_id="s", raw_url=str(tmp_path), day=3).poke({})
