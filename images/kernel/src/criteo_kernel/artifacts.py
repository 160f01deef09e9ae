"""The names of the files the steps exchange, in one place.

Partitions (published whole by a commit, see `storage`: a partition `P/` holds `P/_COMMITTED` and
`P/.attempt-*/`; the files below are those of the committed attempt, which readers resolve):

    extracted/day=N/     train/*.parquet, eval/*.parquet, _extract.json
    processed/.../day=N/ train/*.parquet, eval/*.parquet, _preprocess.json
    workflow/            nvt/ (Workflow.save), serving/ (lookup tables), meta.json
    train/               checkpoint.pt, _train.json (PyTorch); model.onnx, hugectr/, _train.json (HugeCTR)
    package/             a complete Triton model version (below), export.json
    evaluation/          evaluation.json, smoke.npz

A model package (the export step's output, kept in the artifact store under the base URL):

    model.onnx (+ model.onnx.data past 2 GiB), model.py, criteo_serving.py, criteo_kernel/,
    config.pbtxt, checkpoint.pt (PyTorch) or hugectr/ (HugeCTR), preprocessing/ (the workflow folder),
    reference_profile.json, export.json

A model version (`<model>/<N>/` in the Triton repository) holds only the package's `SERVED` entries,
and once deployed `DEPLOYED`'s: Triton localizes a model's whole folder, every kept version, on each
load. The rest (`STORED`) stays in the package, and the version's lineage names its URLs.
"""

SUCCESS = "_SUCCESS"                      # a partition attempt or a model version is complete
COMMIT = "_COMMITTED"                     # a partition's commit object: which attempt is current
EXTRACT_META = "_extract.json"            # whole-day facts counted by extract
PREPROCESS_META = "_preprocess.json"      # rows per split, embedding sizes, workflow
TRAIN_META = "_train.json"
EXPORT_META = "export.json"
EVALUATION = "evaluation.json"
CHECKPOINT = "checkpoint.pt"
HUGECTR_FILES = "hugectr"                 # a HugeCTR-trained version's graph, weights and optimizer states
MODEL_ONNX = "model.onnx"
MODEL_ONNX_DATA = "model.onnx.data"       # model.onnx's external data (a model past protobuf's 2 GiB)
TRITON_CONFIG = "config.pbtxt"
PREPROCESSING = "preprocessing"           # the workflow folder inside a version
WORKFLOW_NVT = "nvt"                      # Workflow.save() inside a workflow folder
SERVING_TABLES = "serving"                # the lookup tables inside a workflow folder
CATEGORY_TABLES = "categories.npz"
CONTINUOUS_STATS = "continuous.json"
WORKFLOW_META = "meta.json"
REFERENCE_PROFILE = "reference_profile.json"  # the training window's data profile
SMOKE_ROWS = "smoke.npz"                  # held-out rows + offline predictions, deploy's smoke inference
LINEAGE = "lineage.json"
REJECTED = "_REJECTED"                    # a version whose promotion failed (the reason inside)
ROLLED_BACK = "_ROLLED_BACK"              # a version left by a rollback: never promoted again by a rerun
SUPERSEDED = "_SUPERSEDED"                # a pushed version whose production moved before its promotion
RESERVED = "_RESERVED"                    # a version number claimed by one deploy (written before any file)

# What Triton loads and the served model reads (triton/model.py, criteo_serving.py): the only package
# entries deploy copies into a version folder. Paths relative to the package, `/`-separated.
SERVED = (MODEL_ONNX, MODEL_ONNX_DATA, "model.py", "criteo_serving.py", "criteo_kernel",
          f"{PREPROCESSING}/{SERVING_TABLES}", TRITON_CONFIG, EXPORT_META)
# What deploy and promotion write into a version beside them.
DEPLOYED = (SMOKE_ROWS, LINEAGE, SUCCESS, REJECTED, ROLLED_BACK, SUPERSEDED, RESERVED)
# What stays in the artifact store (the package), by role: the lineage's `artifacts` name their URLs.
STORED = {"checkpoint": CHECKPOINT, "hugectr": HUGECTR_FILES, "workflow": PREPROCESSING,
          "reference_profile": REFERENCE_PROFILE}


def served(path: str) -> bool:
    """Whether a package file (its path relative to the package) belongs in a served version."""
    return any(path == entry or path.startswith(entry + "/") for entry in SERVED)


def stored_artifacts(lineage: dict, version_dir: str) -> dict[str, str]:
    """{role: URL} of a deployed version's training artifacts (`STORED`): its lineage's `artifacts`.
    A version deployed before they moved to the artifact store records none: its folder holds them."""
    recorded = lineage.get("artifacts")
    if recorded is not None:
        return dict(recorded)
    return {role: f"{version_dir}/{entry}" for role, entry in STORED.items()}
