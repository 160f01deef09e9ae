import pytest

from operators.sensors.raw_day import RawDaySensor

pytestmark = pytest.mark.unit


def test_sensor_finds_plain_or_gz_day(tmp_path):
    s = RawDaySensor(task_id="s", raw_url=str(tmp_path), day=3)
    assert s.poke({}) is False
    (tmp_path / "day_3.gz").write_bytes(b"")
    res = s.poke({})
    assert res.is_done and res.xcom_value == f"{tmp_path}/day_3.gz"


def test_timeout_names_the_files_it_expected(tmp_path):
    from unittest import mock

    from airflow.sdk.exceptions import AirflowSensorTimeout

    s = RawDaySensor(task_id="s", raw_url=str(tmp_path), day=5, timeout=0.3, poke_interval=0.1, mode="poke")
    ti = mock.MagicMock(try_number=1, max_tries=0)  # only the context plumbing is faked
    expected = rf"raw Criteo day 5 never arrived: expected {tmp_path}/day_5 or {tmp_path}/day_5.gz"
    with pytest.raises(AirflowSensorTimeout, match=expected):
        s.execute({"ti": ti, "task_instance": ti})
