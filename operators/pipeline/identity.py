"""A training run's identity: its run key (which day or window, which settings) and the fingerprint
of what it actually read.

The run key names the run's places (partitions, the candidate folder) and is known when the run is
planned, before any raw file is opened. The fingerprint is known once extract has read the days:
it hashes each raw day's size, sha256 and generation (the file's bytes), the workflow, the parent
version and the hyperparameters. Deploy compares both with the versions already in the model
repository: the same run key and fingerprint is the version this run already made (a rerun
creates nothing); the same run key with another fingerprint means an input changed (a corrected
raw day), so the candidate becomes a new version whose lineage names the one it replaces.
"""
from __future__ import annotations

import hashlib
import json

RAW_KEYS = ("url", "bytes", "sha256", "generation")


def run_inputs(raw: list[dict] | dict, workflow_id: str | None, parent_version: int | None,
               hyperparameters: dict | None) -> dict:
    """The run's inputs as recorded in the lineage, with their `fingerprint`.

    `raw`: extract's `input` result per day (one dict for one day).
    """
    days = [raw] if isinstance(raw, dict) else list(raw)
    payload = {
        "raw": sorted(({k: d.get(k) for k in RAW_KEYS} for d in days), key=lambda d: str(d["url"])),
        "workflow_id": workflow_id,
        "parent_version": parent_version,
        "hyperparameters": dict(sorted((hyperparameters or {}).items())),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return {**payload, "fingerprint": hashlib.sha256(blob).hexdigest()[:16]}


def changes(old: dict | None, new: dict) -> list[str]:
    """What differs between two runs' inputs, in words (for the deploy log and the lineage)."""
    if not old:
        return ["the earlier version recorded no inputs"]
    out = []
    before = {d["url"]: d for d in old.get("raw") or []}
    for day in new.get("raw") or []:
        was = before.pop(day["url"], None)
        if was is None:
            out.append(f"{day['url']} is new")
        elif was != day:
            diff = ", ".join(f"{k} {was.get(k)} -> {day.get(k)}" for k in RAW_KEYS[1:] if was.get(k) != day.get(k))
            out.append(f"{day['url']} changed ({diff})")
    out += [f"{url} is no longer read" for url in before]
    for key in ("workflow_id", "parent_version", "hyperparameters"):
        if old.get(key) != new.get(key):
            out.append(f"{key} {old.get(key)} -> {new.get(key)}")
    return out
