"""The request log's layout, atomic part files, and the errors that name the file."""
import os

import numpy as np
import pyarrow as pa
import pytest

from criteo_monitoring.request_log import (
    LABELS,
    REQUESTS,
    RequestLogError,
    RequestLogWriter,
    list_parts,
    part_partition,
    read_part,
    schema,
)

from .conftest import log_day

pytestmark = pytest.mark.unit


def label_table(event_ms):
    n = len(event_ms)
    return pa.table({"request_id": [f"r{i // 4}" for i in range(n)], "row": pa.array(np.arange(n) % 4, pa.int32()),
                     "event_time": pa.array(event_ms, pa.timestamp("ms", tz="UTC")),
                     "criteo_day": pa.array(np.zeros(n, np.int32)),
                     "labelled_at": pa.array(event_ms, pa.timestamp("ms", tz="UTC")),
                     "label": pa.array(np.arange(n) % 2, pa.int8())})


def test_part_files_go_to_the_hour_of_their_event_and_appear_whole(tmp_path):
    hour = 3_600_000
    t0 = 1_767_225_600_000  # 2026-01-01T00:00Z
    writer = RequestLogWriter(str(tmp_path / "log"))
    written = writer.write(LABELS, label_table(np.array([t0 + 5, t0 + 10, t0 + hour + 1, t0 + 25 * hour])))
    assert len(written) == 3
    parts = list_parts(str(tmp_path / "log"), LABELS)
    assert [part_partition(p) for p in parts] == [("2026-01-01", "00"), ("2026-01-01", "01"), ("2026-01-02", "01")]
    assert list_parts(str(tmp_path / "log"), LABELS, date="2026-01-02") == parts[2:]
    assert list_parts(str(tmp_path / "log"), REQUESTS) == []
    # nothing half-written or hidden is left behind, and readers never list such files
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith(".")]
    assert leftovers == []
    hidden = tmp_path / "log/labels/date=2026-01-01/hour=00/.part-x.parquet.tmp"
    hidden.write_bytes(b"half")
    assert len(list_parts(str(tmp_path / "log"), LABELS)) == 3
    table = read_part(__import__("fsspec").filesystem("file"), parts[0], LABELS)
    assert table.num_rows == 2 and table.schema == schema(LABELS)


def test_a_corrupt_or_foreign_file_is_named_in_the_error(tmp_path):
    import fsspec
    import pyarrow.parquet as pq

    fs = fsspec.filesystem("file")
    folder = tmp_path / "requests/date=2026-01-01/hour=00"
    folder.mkdir(parents=True)
    (folder / "part-1.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(RequestLogError, match=r"part-1\.parquet: unreadable requests log file"):
        read_part(fs, str(folder / "part-1.parquet"), REQUESTS)
    pq.write_table(pa.table({"request_id": ["a"], "row": [0]}), folder / "part-2.parquet")
    with pytest.raises(RequestLogError, match=r"part-2\.parquet: requests log file lacks column\(s\) \['event_time'"):
        read_part(fs, str(folder / "part-2.parquet"), REQUESTS)


def test_requests_keep_the_raw_features_losslessly(raw_days, tmp_path):
    import fsspec

    batches = log_day(raw_days / "day_0", 0, tmp_path / "log")
    fs = fsspec.filesystem("file")
    tables = [read_part(fs, p, REQUESTS) for p in list_parts(str(tmp_path / "log"), REQUESTS)]
    logged = pa.concat_tables(tables).sort_by("event_time")
    assert logged.num_rows == sum(len(b) for b in batches) == 20000
    ints = np.concatenate([b.ints for b in batches])
    cats = np.concatenate([b.cat_hash for b in batches])
    i5 = logged.column("I5").to_numpy(zero_copy_only=False).astype(float)
    assert np.array_equal(np.isnan(i5), np.isnan(ints[:, 4]))
    assert np.allclose(i5[~np.isnan(i5)], ints[~np.isnan(ints[:, 4]), 4])
    c3 = logged.column("C3").fill_null(-1).to_numpy()
    assert np.array_equal(c3, cats[:, 2]) and (c3 == -1).any()
    assert set(logged.column("version").to_pylist()) == {1}
    assert logged.column("criteo_day").to_pylist() == [0] * 20000
