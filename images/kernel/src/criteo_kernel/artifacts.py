"""The names of the files the steps exchange, in one place.

Partitions (published whole by a commit, see `storage`: a partition `P/` holds `P/_COMMITTED` and
`P/.attempt-*/`; the files below are those of the committed attempt, which readers resolve):

    extracted/day=N/     train/*.parquet, eval/*.parquet, _extract.json
    processed/.../day=N/ train/*.parquet, eval/*.parquet, _preprocess.json
    workflow/            nvt/ (Workflow.save), serving/ (lookup tables), meta.json
    train/               checkpoint.pt, _train.json (PyTorch); model.onnx, hugectr/, _train.json (HugeCTR)
    package/             a complete Triton model version (below), export.json
    evaluation/          evaluation.json, smoke.npz

A model version (the export step's package, then `<model>/<N>/` in the Triton repository):

    model.onnx, model.py, criteo_serving.py, criteo_kernel/, config.pbtxt, checkpoint.pt (PyTorch)
    or hugectr/ (HugeCTR), preprocessing/ (the workflow folder), reference_profile.json, export.json,
    and once deployed: smoke.npz, lineage.json, _SUCCESS
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
