"""request_log_to_day: one day of the request log -> a raw Criteo day file, the next retrain's fresh data.

    python -m criteo_monitoring request_log_to_day --request-log gs://b/request_log --day 5 --output gs://b/raw

Reads the `date=<day0 + day>` partitions of requests and labels, joins them on (request_id,
row), and writes the labelled rows, in event order, as `<output>/day_N` in the exact Criteo
format (TSV, label + I1..I13 + C1..C26, 8 lowercase hex digits, empty = missing): the file the
training DAGs extract, validate and train on, so served traffic closes the loop. Rows logged twice
(a replay rerun) are kept once. It works one hour partition at a time, so memory is bounded by an
hour of traffic, not by the day.

Never loses data: the file appears whole (written elsewhere, then moved). An existing `day_N`
with the same content is left as it is; one with other content is an error unless
`--overwrite`. Fewer labelled rows than `--min-label-coverage` of the requests (labels still
arriving) is an error too: a partial day must not become training data.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import tempfile
import uuid
from collections import Counter
from datetime import date, timedelta

import numpy as np

from criteo_kernel import landing
from criteo_kernel.codecs import encode_hex
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, day_file_name
from criteo_kernel.storage import fs_root, is_local

from .request_log import KEY, LABELS, REQUESTS, list_parts, part_partition, read_part


class ToDayError(RuntimeError):
    """The day cannot be written yet (nothing logged, labels missing): a later try may succeed."""


class DayExists(ToDayError):
    """A different day_N is already there: never replaced without --overwrite."""


def tsv_lines(frame) -> bytes:
    """Joined request rows (pandas, nullable Int64 features) -> Criteo TSV lines."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(frame):
        return b""
    cols = [pc.cast(pa.array(frame["label"].to_numpy(np.int8)), pa.string())]
    for c in INT_COLUMNS:
        cols.append(pc.fill_null(pc.cast(pa.array(frame[c], pa.int64()), pa.string()), ""))
    for c in CAT_COLUMNS:
        missing = frame[c].isna().to_numpy()
        hexed = pa.array(encode_hex(frame[c].fillna(0).to_numpy(np.int64)).view("S8").reshape(-1)).cast(pa.string())
        cols.append(pc.if_else(pa.array(missing), "", hexed))
    cols[-1] = pc.binary_join_element_wise(cols[-1], pa.scalar("\n"), "")  # the line's end
    lines = pc.binary_join_element_wise(*cols, "\t")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]


def to_day(request_log: str, day: int, output: str, day0: str, gz: bool = False,
           overwrite: bool = False, min_label_coverage: float = 0.99) -> dict:
    the_date = (date.fromisoformat(day0) + timedelta(days=day)).isoformat()
    fs, _ = fs_root(request_log)
    req_parts, lab_parts = list_parts(request_log, REQUESTS, the_date), list_parts(request_log, LABELS, the_date)
    if not req_parts:
        raise ToDayError(f"no requests logged for day {day} (partition date={the_date}) in {request_log}/requests")
    by_hour: dict[str, dict[str, list[str]]] = {}
    for kind, parts in ((REQUESTS, req_parts), (LABELS, lab_parts)):
        for p in parts:
            by_hour.setdefault(part_partition(p)[1], {REQUESTS: [], LABELS: []})[kind].append(p)
    name = day_file_name(day, gz)
    out_fs, out_root = fs_root(output)
    out_fs.makedirs(out_root, exist_ok=True)
    tmp = f"{out_root}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
    stats = Counter()
    versions: Counter = Counter()
    digest = hashlib.sha256()
    local_tmp = tmp if is_local(out_fs) else os.path.join(tempfile.gettempdir(), os.path.basename(tmp))
    raw = open(local_tmp, "wb")
    sink = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if gz else raw
    try:
        for hour in sorted(by_hour):
            joined = _hour_rows(fs, by_hour[hour], day, stats)
            if joined is not None:
                versions.update(joined["version"].astype(int).tolist())
                block = tsv_lines(joined)
                digest.update(block)
                sink.write(block)
        if gz:
            sink.close()
        raw.close()
        _check_coverage(stats, day, request_log, min_label_coverage)
        unchanged = _publish(local_tmp, out_fs, f"{out_root}/{name}", output, name, overwrite, stats["rows"])
    finally:
        if not raw.closed:
            raw.close()
        if os.path.exists(local_tmp):
            os.remove(local_tmp)
    result = {"output": f"{output.rstrip('/')}/{name}", "day": day, "date": the_date, "rows": stats["rows"],
              "positives": stats["positives"], "ctr": stats["positives"] / stats["rows"] if stats["rows"] else None,
              "request_rows": stats["request_rows"], "duplicate_rows": stats["duplicate_rows"],
              "unlabelled_rows": stats["unlabelled_rows"], "orphan_labels": stats["orphan_labels"],
              "request_files": len(req_parts), "label_files": len(lab_parts),
              "versions": {str(v): n for v, n in sorted(versions.items())}, "unchanged": unchanged,
              "sha256": digest.hexdigest() if not gz else None}
    print(f"{'unchanged' if unchanged else 'wrote'} {result['output']}: {stats['rows']} labelled rows of day {day} "
          f"from {len(req_parts)} request and {len(lab_parts)} label files ({stats['duplicate_rows']} duplicates, "
          f"{stats['unlabelled_rows']} unlabelled left out)", flush=True)
    return result


def _hour_rows(fs, parts: dict[str, list[str]], day: int, stats: Counter):
    """One hour partition's requests of `day` joined with their labels, in event order (pandas); None
    when the hour logged labels only. Rows logged twice count once; the counts go into `stats`."""
    import pandas as pd

    features = [*INT_COLUMNS, *CAT_COLUMNS]
    reqs = [read_part(fs, p, REQUESTS, [*KEY, "event_time", "criteo_day", "version", *features])
            for p in parts[REQUESTS]]
    labs = [read_part(fs, p, LABELS, [*KEY, "criteo_day", "label"]) for p in parts[LABELS]]
    if not reqs:
        stats["orphan_labels"] += sum(t.num_rows for t in labs)
        return None
    types = {c: pd.Int64Dtype() for c in features}
    req = pd.concat([t.to_pandas() for t in reqs], ignore_index=True).astype(types)
    req = req[req["criteo_day"] == day]
    stats["request_rows"] += len(req)
    n0 = len(req)
    req = req.drop_duplicates(KEY, keep="last")
    stats["duplicate_rows"] += n0 - len(req)
    if labs:
        lab = pd.concat([t.to_pandas() for t in labs], ignore_index=True)
        lab = lab[lab["criteo_day"] == day].drop_duplicates(KEY, keep="last")[[*KEY, "label"]]
    else:
        lab = pd.DataFrame({"request_id": pd.Series(dtype=str), "row": pd.Series(dtype=np.int32),
                            "label": pd.Series(dtype=np.int8)})
    joined = req.merge(lab, on=KEY, how="inner").sort_values(["event_time", "request_id", "row"], kind="stable")
    stats["unlabelled_rows"] += len(req) - len(joined)
    stats["rows"] += len(joined)
    stats["positives"] += int(joined["label"].sum())
    return joined


def _check_coverage(stats: Counter, day: int, request_log: str, min_label_coverage: float) -> None:
    unique = stats["request_rows"] - stats["duplicate_rows"]
    coverage = stats["rows"] / unique if unique else 0.0
    if coverage < min_label_coverage:
        raise ToDayError(f"day {day}: only {stats['rows']} of {unique} logged requests have a label "
                         f"({coverage:.1%} < --min-label-coverage {min_label_coverage:.0%}) in {request_log}; "
                         f"labels may still be arriving: nothing was written")


def _publish(local_tmp: str, out_fs, final: str, output: str, name: str, overwrite: bool, rows: int) -> bool:
    """The written day moved to `final` whole, then its landing manifest; True when an identical day
    was there already (left as it is). A day with other content is replaced only with `overwrite`."""
    unchanged = False
    if out_fs.exists(final):
        with open(local_tmp, "rb") as fh:
            new_sum = hashlib.sha256(fh.read()).hexdigest()
        with out_fs.open(final, "rb") as fh:
            old_sum = hashlib.sha256(fh.read()).hexdigest()
        if new_sum == old_sum:
            unchanged = True
        elif not overwrite:
            raise DayExists(f"{output}/{name} exists with other content (sha256 {old_sum[:12]}, new "
                            f"{new_sum[:12]}): raw data is never replaced without --overwrite")
    # the landing manifest (criteo_kernel.landing), written after the day: it says "complete"
    day_url = f"{output.rstrip('/')}/{name}"
    manifest = landing.Manifest(rows=rows, bytes=os.path.getsize(local_tmp), sha256=landing.file_sha256(local_tmp))
    if not unchanged:
        if is_local(out_fs):
            os.replace(local_tmp, final)
        else:  # one object upload: it appears only once complete
            out_fs.put_file(local_tmp, final)
    if not unchanged or landing.read_manifest(day_url) != manifest:
        landing.write_manifest(day_url, manifest)
    return unchanged


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_monitoring request_log_to_day", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--request-log", required=True)
    p.add_argument("--day", type=int, required=True, help="the Criteo day to write")
    p.add_argument("--output", required=True, help="the raw folder (Variable criteo_raw_url)")
    p.add_argument("--day0", required=True, help="the date of day_0, YYYY-MM-DD (Variable criteo_day0_date)")
    p.add_argument("--gz", action="store_true", help="write day_N.gz")
    p.add_argument("--overwrite", action="store_true", help="replace an existing day_N with other content")
    p.add_argument("--min-label-coverage", type=float, default=0.99,
                   help="fail when fewer of the logged requests have a label (default 0.99)")
    a = p.parse_args(argv)
    return to_day(a.request_log, a.day, a.output, a.day0, a.gz, a.overwrite, a.min_label_coverage)
