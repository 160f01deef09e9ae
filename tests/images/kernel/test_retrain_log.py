"""The retrain log's record: written by model_monitoring, read by the monitor."""
from datetime import datetime, timezone

import pytest

from criteo_kernel.retrain_log import RetrainRecord, folder, record_url

pytestmark = pytest.mark.unit

RECORD = RetrainRecord(model="criteo_dcn", version=3, at="2026-11-24T12:00:05+00:00",
                       run_id="monitoring__2026-11-24T12:00:04.5+00:00", triggers=["auc_degraded"],
                       reason="model_monitoring: auc_degraded fired: ...", monitoring_run_id="scheduled__x")


def test_a_record_round_trips_and_is_named_after_its_run():
    assert RetrainRecord.parse("r.json", RECORD.to_json()) == RECORD
    # one file per triggered run: a retried record task rewrites it, never adds a second
    assert record_url(folder("gs://b/base"), RECORD) == \
        "gs://b/base/retrain_log/criteo_dcn/monitoring__2026-11-24T12_00_04.5_00_00.json"
    assert RECORD.timestamp() == datetime(2026, 11, 24, 12, 0, 5, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("text, message", [
    ("not json", "r.json: not JSON"),
    ("[1]", "r.json: expected a JSON object"),
    ('{"at": "2026-11-24T12:00:00+00:00", "run_id": "x"}', "r.json: field 'model' is None"),
    ('{"model": "m", "at": "2026-11-24T12:00:00", "run_id": "x"}', "r.json: field 'at' is '2026-11-24T12:00:00'; "
                                                                   "expected a UTC offset"),
    ('{"model": "m", "at": "2026-11-24T12:00:00Z", "run_id": "x", "version": "3"}', "r.json: field 'version' is '3'"),
    ('{"model": "m", "at": "2026-11-24T12:00:00Z", "run_id": "x", "triggers": "auc"}', "r.json: field 'triggers'"),
])
def test_a_broken_record_names_the_file_and_the_field(text, message):
    with pytest.raises(ValueError) as err:
        RetrainRecord.parse("r.json", text)
    assert str(err.value).startswith(message), err.value
