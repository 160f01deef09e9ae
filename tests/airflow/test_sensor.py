import pytest

from operators.sensors import RawDaySensor

pytestmark = pytest.mark.unit


def test_sensor_finds_plain_or_gz_day(tmp_path):
    s = RawDaySensor(task_id="s", raw_url=str(tmp_path), day=3)
    assert s.poke({}) is False
    (tmp_path / "day_3.gz").write_bytes(b"")
    res = s.poke({})
    assert res.is_done and res.xcom_value == f"{tmp_path}/day_3.gz"
