"""The blessing gate (after TFX's Evaluator): a candidate may be pushed only if it is good enough
in absolute terms and no worse than the production model on the same held-out rows.

The blessing names what it blesses (the evaluate step's declared outputs: the candidate package
and its smoke rows), so the deploy task consumes the blessing and nothing else decides what ships.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Blessing:
    blessed: bool
    reasons: list[str]
    candidate_auc: float
    baseline_auc: float | None
    auc_floor: float
    max_auc_drop: float
    package: str | None = None      # the candidate package evaluated (evaluate's `candidate`)
    smoke_rows: str | None = None   # its held-out rows and offline predictions (evaluate's `smoke_rows`)
    # The production version it was judged against (evaluate's baseline, the plan's parent_version;
    # None: nothing served). Deploy promotes only while that version still serves (operators/pipeline/pusher.py).
    baseline_version: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def judge(evaluation: dict, auc_floor: float, max_auc_drop: float, baseline_version: int | None = None) -> Blessing:
    """The verdict on evaluate's result; `baseline_version`: the production version evaluate's
    baseline is (the plan's parent_version), recorded in the blessing."""
    cand = float(evaluation["candidate_metrics"]["auc"])
    base = evaluation.get("baseline_metrics")
    base_auc = float(base["auc"]) if base else None
    reasons = []
    if math.isnan(cand):
        reasons.append("candidate AUC is undefined (held-out slice has a single class)")
    elif cand < auc_floor:
        reasons.append(f"candidate AUC {cand:.4f} is below the floor {auc_floor:.4f}")
    if base_auc is not None and not math.isnan(base_auc) and cand < base_auc - max_auc_drop:
        reasons.append(f"candidate AUC {cand:.4f} is worse than production {base_auc:.4f} "
                       f"by more than {max_auc_drop:.4f}")
    blessed = not reasons
    if blessed:
        reasons.append(f"candidate AUC {cand:.4f} >= floor {auc_floor:.4f}"
                       + ("" if base_auc is None else f" and not below production's {base_auc:.4f} by more than "
                                                  f"{max_auc_drop:.4f}"))
    return Blessing(blessed, reasons, cand, base_auc, auc_floor, max_auc_drop,
                    evaluation.get("candidate"), evaluation.get("smoke_rows"),
                    None if baseline_version is None else int(baseline_version))
