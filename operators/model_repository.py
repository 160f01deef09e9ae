"""A hook onto the Triton model repository in the bucket (a local folder or gs://).

Versions are integer folders `<model>/<N>/`. A version is complete when its `_SUCCESS` marker is
present: on a local disk the whole folder appears in one rename; on GCS the marker is the last
object copied. The production version is the highest complete one, the version Triton's
`latest` policy serves. Each version folder carries `lineage.json`.
"""
from __future__ import annotations

import json
import logging
import uuid

from .layout import Layout

log = logging.getLogger(__name__)
SUCCESS = "_SUCCESS"


def storage_path(url: str):
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url if "://" in url else f"file://{url}")


class ModelRepositoryHook:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.model_dir = storage_path(layout.model_dir())

    def versions(self) -> list[int]:
        if not self.model_dir.exists():
            return []
        out = []
        for p in self.model_dir.iterdir():
            if p.name.isdigit() and (p / SUCCESS).exists():
                out.append(int(p.name))
        return sorted(out)

    def production_version(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def lineage(self, version: int) -> dict:
        return json.loads((self.model_dir / str(version) / "lineage.json").read_text())

    def find_by_run_key(self, run_key: str) -> int | None:
        for v in reversed(self.versions()):
            try:
                if self.lineage(v).get("run_key") == run_key:
                    return v
            except FileNotFoundError:
                continue
        return None

    def push(self, package_url: str, lineage: dict, max_attempts: int = 5) -> int:
        """Copy a package in as the next version; return its number. Visible only when complete."""
        package = storage_path(package_url)
        if not (package / SUCCESS).exists():
            raise FileNotFoundError(f"{package_url}: package is not published (no {SUCCESS})")
        self.model_dir.mkdir(parents=True, exist_ok=True)
        config = package / "config.pbtxt"
        if not (self.model_dir / "config.pbtxt").exists():
            config.copy(self.model_dir / "config.pbtxt")
        for _ in range(max_attempts):
            version = (max(self._all_numeric(), default=0)) + 1
            staging = self.model_dir / f".staging-{version}-{uuid.uuid4().hex[:8]}"
            for src in package.rglob("*"):
                rel = str(src.relative_to(package))
                # The package's own marker is replaced by the version's; nested ones (the
                # workflow's) are part of the content.
                if src.is_file() and rel != SUCCESS:
                    dst = staging / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    src.copy(dst)
            (staging / "lineage.json").write_text(json.dumps({**lineage, "version": version}, indent=2, default=str))
            final = self.model_dir / str(version)
            if self._is_local:
                import os

                (staging / SUCCESS).touch()
                try:
                    # rename() of a folder onto an existing one fails: a concurrent deploy that
                    # took this number first makes us retry with the next.
                    os.rename(staging.path, final.path)
                except OSError:
                    staging.rmdir(recursive=True)
                    continue
            else:
                if final.exists():
                    staging.rmdir(recursive=True)
                    continue
                for src in staging.rglob("*"):
                    if src.is_file():
                        dst = final / str(src.relative_to(staging))
                        src.copy(dst)
                (final / SUCCESS).touch()
                staging.rmdir(recursive=True)
            log.info("published %s version %s from %s", self.layout.cfg.model_name, version, package_url)
            return version
        raise RuntimeError(f"could not reserve a version number in {self.model_dir} after {max_attempts} attempts")

    def _all_numeric(self) -> list[int]:
        if not self.model_dir.exists():
            return []
        return [int(p.name) for p in self.model_dir.iterdir() if p.name.isdigit()]

    @property
    def _is_local(self) -> bool:
        return self.model_dir.protocol in ("file", "local", "")
