"""The two trainers, named once: the `trainer` Param's values, what a model version's lineage
records, and the step that trains each (its catalogue name, which is also its command).

The Airflow side (operators/pipeline/planning.py) chooses one; the merlin image's steps record and
read the choice (train_hugectr, export). Comparisons use these constants, never the literals.
"""
from __future__ import annotations

PYTORCH = "pytorch"   # the DCN in PyTorch (images/merlin, target merlin): any runtime, CPU or GPU
HUGECTR = "hugectr"   # the DCN in HugeCTR (images/merlin, target hugectr): GPU containers only

TRAINERS = (PYTORCH, HUGECTR)

# A version made before HugeCTR was added records no trainer: PyTorch made it.
LEGACY = PYTORCH

TRAIN_STEP = {PYTORCH: "train", HUGECTR: "train_hugectr"}
