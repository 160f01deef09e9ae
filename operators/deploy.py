"""Deploy: push a blessed package into the Triton model repository as a new version, with lineage."""
from __future__ import annotations

import os
from typing import Any, Sequence

from airflow.sdk import BaseOperator


def code_revision() -> str:
    """The git revision of the pipeline code (images bake it in as CRITEO_CODE_REVISION)."""
    if os.environ.get("CRITEO_CODE_REVISION"):
        return os.environ["CRITEO_CODE_REVISION"]
    import subprocess

    from .config import REPO_ROOT

    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def plain(obj):
    """Materialise XCom values (mapped results arrive as lazy sequences) into JSON-able data."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "__iter__"):
        return [plain(x) for x in obj]
    return str(obj)


class DeployModelOperator(BaseOperator):
    """Publish a candidate package as the next version of the model in the Triton repository.

    Idempotent: if a version with the same run key exists, it is returned and nothing is copied.
    The version folder becomes visible only complete, and carries lineage.json: the days trained
    on, the validation results, metrics, the parent version and the code revision.

    :param package: URL of the exported package (export step output).
    :param run_key: identity of the training run (same inputs -> same key).
    :param lineage: the manifest fields to record (templated; may hold XComArgs).
    """

    template_fields: Sequence[str] = ("package", "run_key", "lineage")
    ui_color = "#ffe0b3"

    def __init__(self, *, package: str, run_key: str, lineage: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.package = package
        self.run_key = run_key
        self.lineage = lineage

    def execute(self, context) -> dict:
        from datetime import datetime, timezone

        from .config import PipelineConfig
        from .layout import Layout
        from .model_repository import ModelRepositoryHook

        layout = Layout(PipelineConfig.load())
        hook = ModelRepositoryHook(layout)
        existing = hook.find_by_run_key(self.run_key)
        if existing is not None:
            self.log.info("run %s is already deployed as version %s; nothing to do", self.run_key, existing)
            return {"version": existing, "created": False, "version_dir": layout.version_dir(existing)}
        lineage = plain(self.lineage)
        if isinstance(lineage.get("validation"), dict):  # one day (incremental): same shape as a window
            lineage["validation"] = [lineage["validation"]]
        manifest = {
            **lineage,
            "run_key": self.run_key,
            "model": layout.cfg.model_name,
            "package": self.package,
            "code_revision": code_revision(),
            "dag_id": context["dag"].dag_id,
            "run_id": context["run_id"],
            "deployed_at": datetime.now(timezone.utc).isoformat(),
        }
        version = hook.push(self.package, manifest)
        self.log.info("deployed %s version %s (parent %s)", layout.cfg.model_name, version,
                      manifest.get("parent_version"))
        return {"version": version, "created": True, "version_dir": layout.version_dir(version)}
