"""What both paths of the preprocess step publish and return (in process, or on a dask cluster):
the fitted workflow with its serving tables, the partitions' meta, and the step's result."""
from __future__ import annotations

import json
import os

import numpy as np

from criteo_kernel import storage
from criteo_kernel.artifacts import CATEGORY_TABLES, CONTINUOUS_STATS, SERVING_TABLES, WORKFLOW_META, WORKFLOW_NVT

from ..hugectr.hugectr_data import slot_size_array
from .serving_tables import serving_tables

SPLITS = ("train", "eval")


def hugectr_meta(hugectr: bool, sizes: dict) -> dict:
    """What a partition written for HugeCTR declares: the flag, and the reader's slot_size_array
    (the fitted workflow's vocabulary per categorical column), which train_hugectr reads from here."""
    return {"hugectr": hugectr, **({"slot_size_array": slot_size_array(sizes)} if hugectr else {})}


def load_workflow(url: str, tmp: str, nvt):
    """The published workflow at `url` (incremental runs transform with it)."""
    wdir = storage.download_dir(storage.resolve(url), os.path.join(tmp, "workflow"))
    return nvt.Workflow.load(os.path.join(wdir, WORKFLOW_NVT))


def serving_tables_published(workflow, fit_workflow: str | None, tmp: str, sizes: dict, fit_days: list,
                              fit_rows: int, max_vocab: int, freq_threshold: int) -> tuple[dict, dict]:
    """The workflow's serving tables; on a full retrain, the workflow is also published with them."""
    tables, cont = serving_tables(workflow)
    if fit_workflow:
        publish_workflow(workflow, tables, cont, fit_workflow, tmp,
                          {"embedding_sizes": sizes, "fit_days": fit_days, "fit_rows": fit_rows,
                           "max_vocab": max_vocab, "freq_threshold": freq_threshold})
    return tables, cont


def step_result(output_root: str, outputs: dict, workflow: str, fitted: bool, sizes: dict, rows: int, fit_rows: int,
            timings: dict, **extra) -> dict:
    """The step's result, whichever path computed it; `extra` says how (engine, cluster, ...)."""
    total = timings["fit_s"] + timings["transform_s"]
    return {
        "output_root": output_root, "days": outputs, "partitions": [o["url"] for o in outputs.values()],
        "workflow": workflow, "fitted": fitted, "embedding_sizes": sizes, "rows": rows, "fit_rows": fit_rows,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "rows_per_s_fit_transform": round(rows / total, 1) if total else None,
        **extra,
    }


def publish_workflow(workflow, tables: dict, cont: dict, url: str, tmp: str, meta: dict) -> None:
    """Save the fitted workflow with its serving tables and meta.json, and publish it at `url`."""
    # Save to local scratch first: save() repoints the Categorify tables at the save folder,
    # and the transforms after this must keep reading them after the staging folder is published.
    local_wf = os.path.join(tmp, "wf-out")
    workflow.save(os.path.join(local_wf, WORKFLOW_NVT))
    os.makedirs(os.path.join(local_wf, SERVING_TABLES), exist_ok=True)
    np.savez(os.path.join(local_wf, SERVING_TABLES, CATEGORY_TABLES), **tables)
    with open(os.path.join(local_wf, SERVING_TABLES, CONTINUOUS_STATS), "w") as fh:
        json.dump(cont, fh, indent=2)
    with open(os.path.join(local_wf, WORKFLOW_META), "w") as fh:
        json.dump(meta, fh, indent=2)
    with storage.staged_partition(url) as staging:
        storage.upload_dir(local_wf, staging)
