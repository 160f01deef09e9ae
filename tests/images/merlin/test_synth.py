import gzip

import numpy as np
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
from criteo_merlin.ingest import synth  # noqa: E402

pytestmark = pytest.mark.steps


def _lines(path, opener=open):
    with opener(path, "rt") as fh:
        return fh.read().splitlines()


@pytest.mark.parametrize("gz", [False, True])
def test_generator_writes_exact_criteo_format(tmp_path, gz):
    args = ["--out", str(tmp_path), "--days", "0-1", "--rows", "5000", "--chunk-rows", "2000"]
    synth.main(args + (["--gz"] if gz else []))
    name = "day_1.gz" if gz else "day_1"
    lines = _lines(tmp_path / name, gzip.open if gz else open)
    assert len(lines) == 5000
    fields = [line.split("\t") for line in lines]
    assert {len(f) for f in fields} == {40}
    labels = {f[0] for f in fields}
    assert labels == {"0", "1"}
    ints = np.array([[v for v in f[1:14]] for f in fields])
    assert all(v == "" or v.lstrip("-").isdigit() for v in ints.ravel())
    assert (ints == "").mean(axis=0)[11] > 0.5           # I12 mostly missing, as in Criteo
    assert (ints[:, 1] == "-1").any() or (ints[:, 1] == "-2").any()  # I2 has negatives
    cats = np.array([f[14:] for f in fields])
    ok = np.vectorize(lambda v: v == "" or (len(v) == 8 and all(c in "0123456789abcdef" for c in v)))(cats)
    assert ok.all()
    assert (cats == "").any()
    assert len(set(cats[:, 2])) > 500 and len(set(cats[:, 8])) <= 3  # heavy and tiny vocabularies
    ctr = np.mean([f[0] == "1" for f in fields])
    assert 0.03 < ctr < 0.4


def test_drift_switch_shifts_features_and_clicks():
    base_l, base_i, base_c = synth.generate_day(5, 40000, seed=7, drift_from_day=None)
    drift_l, drift_i, drift_c = synth.generate_day(5, 40000, seed=7, drift_from_day=3)
    same_l, _, same_c = synth.generate_day(5, 40000, seed=7, drift_from_day=None)
    assert (base_c == same_c).all() and (base_l == same_l).all()      # deterministic
    assert np.nanmedian(drift_i[:, 0]) > 1.5 * np.nanmedian(base_i[:, 0])  # counts scale up
    top_base = np.bincount(np.unique(base_c[:, 4], return_inverse=True)[1]).argmax()
    assert np.unique(base_c[:, 4])[top_base] != np.unique(drift_c[:, 4])[
        np.bincount(np.unique(drift_c[:, 4], return_inverse=True)[1]).argmax()]  # popularity moves
    assert abs(base_l.mean() - drift_l.mean()) > 0.02  # the click function moves the CTR
