"""A hook onto the Triton model repository in the bucket (a local folder or gs://).

Versions are integer folders `<model>/<N>/`. A version is complete when its `_SUCCESS` marker is
present: its files are copied in and the marker comes last, with no folder rename (gcsfuse refuses
one in a flat bucket; criteo_kernel.storage.publish_by_copy). Each version folder carries
`lineage.json`.

A version holds only what Triton loads and the served model reads (criteo_kernel.artifacts.SERVED):
Triton copies a model's whole folder, every kept version, on each load and pod start. The
package's training artifacts (checkpoint, HugeCTR files with their optimizer states, the workflow,
the reference profile) stay in the artifact store, and the lineage's `artifacts` name their URLs.

The production version is named by the model's own `config.pbtxt`
(`version_policy: { specific: { versions: [N] } }`), so the repository itself says what serves:
any Triton that (re)loads the model, a restarted one included, serves exactly that version, and a
pushed but unpromoted version, or a half-copied one, is never loaded. A repository written
before the pointer existed (policy `latest`) falls back to the highest complete version.
The same write sets the dynamic batcher's queue delay the caller gives (deploy and rollback pass
the setting `criteo_triton_max_queue_delay_us`; the rest of the version's config is kept as
exported), so a change of that setting takes effect at the next deploy or rollback. The config's
text is criteo_kernel.triton_config's to render, patch and parse.
A version whose promotion failed keeps its files for inspection, loses `_SUCCESS` and gets
`_REJECTED` (the reason), so it is neither production nor a rerun's "already deployed". A version
left by a rollback gets `_ROLLED_BACK`, so no rerun of its deploy promotes it again.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

from criteo_kernel import triton_config
from criteo_kernel.artifacts import LINEAGE, REJECTED, ROLLED_BACK, STORED, SUCCESS, served
from criteo_kernel.artifacts import TRITON_CONFIG as CONFIG
from criteo_kernel.storage import publish_by_copy

from ..pipeline.layout import Layout
from .storage import storage_path, write_text_atomic

log = logging.getLogger(__name__)
_STAGING = re.compile(r"^\.staging-\d+-(\d+)-[0-9a-f]+$")
STALE_STAGING_S = 6 * 3600  # a push never takes this long: its staging folder is a crash's leftover


class ModelRepositoryHook:
    """The versions of one model in the Triton repository (a folder or gs://), and which one serves.

    :param layout: where the repository lies (Layout of the pipeline's settings).
    :param max_queue_delay_us: the dynamic batcher's queue delay `set_production` writes (the
        caller's setting criteo_triton_max_queue_delay_us; default: the exported config's, none).
    :param instance_kind: the instance kind `set_production` writes (criteo_triton_instance_kind;
        default KIND_CPU, the exported config's).
    """

    def __init__(self, layout: Layout, max_queue_delay_us: int = triton_config.DEFAULT_QUEUE_DELAY_US,
                 instance_kind: str = triton_config.DEFAULT_INSTANCE_KIND):
        self.layout = layout
        self.model_dir = storage_path(layout.model_dir())
        self.max_queue_delay_us = triton_config.parse_queue_delay(max_queue_delay_us)
        self.instance_kind = triton_config.parse_instance_kind(instance_kind)

    def versions(self) -> list[int]:
        if not self.model_dir.exists():
            return []
        out = []
        for p in self.model_dir.iterdir():
            if p.name.isdigit() and (p / SUCCESS).exists():
                out.append(int(p.name))
        return sorted(out)

    def production_version(self) -> int | None:
        config = self.model_dir / CONFIG
        if not config.exists():  # nothing promoted yet (a pushed version is not production)
            return None
        versions = self.versions()
        pinned = triton_config.pinned_version(config.read_text())
        if pinned is None:  # a repository from before the pointer: Triton's `latest` policy
            return versions[-1] if versions else None
        if pinned not in versions:
            raise RuntimeError(f"{config} pins version {pinned}, which is not a complete version "
                               f"(complete: {versions}); fix the repository or run `criteo-mlops rollback`")
        return pinned

    def set_production(self, version: int) -> int | None:
        """Point the model's config.pbtxt at `version` (one object write), with the queue delay
        setting in its dynamic_batching; return the previous version."""
        if version not in self.versions():
            raise ValueError(f"version {version} of {self.layout.model_name} is not complete in {self.model_dir}")
        previous = self.production_version()
        text = triton_config.with_version_policy((self.model_dir / str(version) / CONFIG).read_text(), version)
        text = triton_config.with_queue_delay(text, self.max_queue_delay_us)
        text = triton_config.with_instance_group(text, self.instance_kind)
        write_text_atomic(self.model_dir / CONFIG, text)
        log.info("production pointer of %s: %s -> %s", self.layout.model_name, previous, version)
        return previous

    def clear_production(self) -> None:
        """No version serves any more (the first promotion failed): the model config goes away."""
        config = self.model_dir / CONFIG
        if config.exists():
            config.unlink()

    def reject(self, version: int, reason: str) -> None:
        """Take a version out of service for good, keeping its files: marker off, reason on."""
        vdir = self.model_dir / str(version)
        (vdir / REJECTED).write_text(reason + "\n")
        if (vdir / SUCCESS).exists():
            (vdir / SUCCESS).unlink()
        log.warning("version %s rejected: %s", version, reason)

    def is_rolled_back(self, version: int) -> bool:
        return (self.model_dir / str(version) / ROLLED_BACK).exists()

    def mark_rolled_back(self, version: int, note: str) -> None:
        """A rollback left this version: no rerun of its deploy promotes it again."""
        (self.model_dir / str(version) / ROLLED_BACK).write_text(note.rstrip("\n") + "\n")

    def clear_rolled_back(self, version: int) -> None:
        """Serving this version again by hand (a roll forward) lifts its mark."""
        mark = self.model_dir / str(version) / ROLLED_BACK
        if mark.exists():
            mark.unlink()

    def prune(self, keep: int) -> list[int]:
        """Delete version folders beyond the newest `keep` complete ones; never production."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        production = self.production_version()
        newest = self.versions()[-keep:]
        kept = set(newest) | {production}
        removed = []
        for v in sorted(self._all_numeric()):
            # Folders newer than the kept ones (a push under way, a fresh rejection) are left alone.
            if v in kept or not newest or v > newest[0]:
                continue
            vdir = self.model_dir / str(v)
            if (vdir / SUCCESS).exists():  # marker first: a half-deleted version is never "complete"
                (vdir / SUCCESS).unlink()
            vdir.rmdir(recursive=True)
            removed.append(v)
        if removed:
            log.info("pruned versions %s of %s (keeping %s)", removed, self.layout.model_name, sorted(kept))
        self._remove_stale_staging()
        return removed

    def _remove_stale_staging(self, older_than_s: float = STALE_STAGING_S) -> list[str]:
        """Staging folders of pushes that died midway (killed, node lost): never loaded, now deleted."""
        gone = []
        for p in self.model_dir.iterdir():
            m = _STAGING.match(p.name)
            if m and time.time() - int(m.group(1)) > older_than_s:
                p.rmdir(recursive=True)
                gone.append(p.name)
        if gone:
            log.info("removed the staging folders of interrupted pushes: %s", gone)
        return gone

    def lineage(self, version: int) -> dict:
        return json.loads((self.model_dir / str(version) / LINEAGE).read_text())

    def find_by_run_key(self, run_key: str, fingerprint: str | None = None) -> int | None:
        """The newest complete version made by run `run_key`; with `fingerprint`, only one made from
        the same inputs (operators/pipeline/identity.py). A version from before fingerprints were
        recorded matches any."""
        for v in reversed(self.versions()):
            try:
                lineage = self.lineage(v)
            except FileNotFoundError:
                continue
            if lineage.get("run_key") != run_key:
                continue
            recorded = (lineage.get("inputs") or {}).get("fingerprint")
            if fingerprint is None or recorded is None or recorded == fingerprint:
                return v
        return None

    def push(self, package_url: str, lineage: dict, extra_files: dict[str, str] | None = None,
             max_attempts: int = 5) -> int:
        """Copy a package in as the next version; return its number. Visible only when complete.

        Pushing does not change what serves: `set_production` does. extra_files: {name in the
        version: source URL}, e.g. the smoke rows with their offline predictions. The lineage gets
        `artifacts`: {role: URL in the package} of the training artifacts the version leaves out.
        """
        package = storage_path(package_url)
        if not (package / SUCCESS).exists():
            raise FileNotFoundError(f"{package_url}: package is not published (no {SUCCESS})")
        lineage = {**lineage, "artifacts": {role: f"{package_url.rstrip('/')}/{entry}" for role, entry in STORED.items()
                                            if (package / entry).exists()}}
        self.model_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(max_attempts):
            version = (max(self._all_numeric(), default=0)) + 1
            # The start time in the name lets `prune` tell a crashed push's leftovers from a live one.
            staging = self.model_dir / f".staging-{version}-{int(time.time())}-{uuid.uuid4().hex[:8]}"
            final = self.model_dir / str(version)
            try:
                self._stage(package, staging, lineage, version, extra_files or {})
                if not self._publish(staging, final):
                    continue  # a concurrent deploy took this number: try the next
            except BaseException:
                # An error midway leaves no half version; a process killed outright leaves only
                # the hidden staging folder (never loaded: not a number) for `prune` to remove.
                try:
                    if staging.exists():
                        staging.rmdir(recursive=True)
                except OSError as exc:  # a read-only bucket keeps it: hidden, and pruned later
                    log.warning("could not remove the staging folder %s: %s", staging, exc)
                raise
            log.info("published %s version %s from %s", self.layout.model_name, version, package_url)
            return version
        raise RuntimeError(f"could not reserve a version number in {self.model_dir} after {max_attempts} attempts")

    def _stage(self, package, staging, lineage: dict, version: int, extra_files: dict[str, str]) -> None:
        for src in package.rglob("*"):
            rel = str(src.relative_to(package))
            # Only the serving entries: the rest stays in the package (the lineage names it).
            if src.is_file() and served(rel):
                dst = staging / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                src.copy(dst)
        for name, src_url in extra_files.items():
            storage_path(src_url).copy(staging / name)
        (staging / LINEAGE).write_text(json.dumps({**lineage, "version": version}, indent=2, default=str))

    @staticmethod
    def _publish(staging, final) -> bool:
        """Make the staged version complete in its final folder without renaming a folder (gcsfuse
        refuses that in a flat bucket): its files copied in, `_SUCCESS` last, so neither `versions()`
        nor a Triton pinned by config.pbtxt takes a half-copied one; False if its number was taken
        meanwhile (criteo_kernel.storage.publish_by_copy)."""
        return publish_by_copy(staging.fs, staging.path, final.path)

    def _all_numeric(self) -> list[int]:
        if not self.model_dir.exists():
            return []
        return [int(p.name) for p in self.model_dir.iterdir() if p.name.isdigit()]
