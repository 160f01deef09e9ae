"""Unit tests of the monitoring image's code (images/monitoring: the inference client's reading
and logging, the request log, the monitor's windows and metrics, request_log_to_day), run in .venv with no
server: requests are "answered" by the test. The same code against real Triton, Prometheus and
the GCS emulator is in test_replay_monitor.py."""
import numpy as np
import pytest

MODEL = "criteo_dcn"
DAY0 = "2026-01-01"  # the date replayed day_0 is logged on


@pytest.fixture(scope="session")
def raw_days(tmp_path_factory):
    """Synthetic Criteo days in the exact raw format: day_0 (20k rows), day_1 (drifted), day_2.gz (not
    drifted), 6k rows each."""
    from criteo_merlin.ingest import synth

    out = tmp_path_factory.mktemp("raw")
    synth.main(["--out", str(out), "--days", "0", "--rows", "20000"])
    synth.main(["--out", str(out), "--days", "1", "--rows", "6000", "--drift-from-day", "1"])
    synth.main(["--out", str(out), "--days", "2", "--rows", "6000", "--gz"])
    return out


def answer(batch, version=1, batch_size=64):
    """Fake Triton answers for a whole batch: (start, stop, (pred, version, latency, answered_ms))."""
    rng = np.random.default_rng(batch.first_row)
    out = []
    for a in range(0, len(batch), batch_size):
        b = min(a + batch_size, len(batch))
        out.append((a, b, (rng.random(b - a).astype(np.float32), version, 1.5, 1_767_225_600_000 + a)))
    return out


def log_day(path, day, request_log, version=1, day0=DAY0, labels=True, chunk_rows=2500):
    """Log a raw day as replay does (same recorder, same writer), Triton's answers made up."""
    from datetime import date

    import pyarrow as pa

    from criteo_monitoring.recorder import RequestRecorder, day_start_ms
    from criteo_monitoring.request_log import LABELS, REQUESTS, RequestLogWriter
    from criteo_monitoring.traffic import count_rows, read_batches

    writer = RequestLogWriter(str(request_log))
    recorder = RequestRecorder(MODEL, day, "replay", day_start_ms(date.fromisoformat(day0), day), count_rows(str(path)))
    batches = list(read_batches(str(path), chunk_rows=chunk_rows))
    for batch in batches:
        req, lab = recorder.tables(batch, answer(batch, version))
        writer.write(REQUESTS, req)
        if labels:
            writer.write(LABELS, lab.append_column("labelled_at", pa.array(np.zeros(lab.num_rows, np.int64),
                                                                           pa.timestamp("ms", tz="UTC"))))
    return batches


def day_profile(path):
    """The validator's own profile of a raw day (what a version's reference is merged from)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from criteo_kernel.schema import COLUMNS, INT_COLUMNS
    from criteo_validator.profile import ProfileBuilder

    table = pacsv.read_csv(str(path), read_options=pacsv.ReadOptions(column_names=COLUMNS),
                           parse_options=pacsv.ParseOptions(delimiter="\t"),
                           convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS},
                                                                strings_can_be_null=True))
    text = table.to_pandas()
    numbers = pd.DataFrame({c: pd.to_numeric(text[c]) for c in INT_COLUMNS})
    builder = ProfileBuilder()
    builder.add(text, numbers)
    return builder.finish({"rows": len(text), "positives": int((text["label"] == "1").sum()), "missing": {}}, str(path))
