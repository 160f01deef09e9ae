"""A hook onto the Triton model repository in the bucket (a local folder or gs://).

Versions are integer folders `<model>/<N>/`. A version is complete when its `_SUCCESS` marker is
present: its number is claimed first (`_RESERVED`, criteo_kernel.storage.reserve_folder), its files
are copied straight in and the marker comes last, with no folder rename (gcsfuse refuses one in a
flat bucket). Each version folder carries `lineage.json`.

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
left by a rollback gets `_ROLLED_BACK`, so no rerun of its deploy promotes it again. A version
pushed while production moved away from what it was judged against gets `_SUPERSEDED` (the reason)
and loses `_SUCCESS` the same way: it never served and never will.

Concurrent deploys (two DAGs, or a rerun beside a run) are safe without any lock outside the bucket:

- a version number is claimed before any file is copied, by a create-only write of
  `<model>/<N>/_RESERVED` (criteo_kernel.storage.reserve_folder: ifGenerationMatch=0 on gs://,
  mkdir on a local disk); the loser of a number takes the next one. A claim whose push died is
  never complete (no `_SUCCESS`), so nothing reads it, and `prune` removes it once stale;
- the pointer moves by compare-and-swap (`set_production(version, expected=...)`): on gs:// the
  object is written with ifGenerationMatch=<the generation its content was read at> (0: there was
  none), on a local disk under an exclusive flock held across read-compare-replace. When
  production is no longer `expected` nothing is written and ProductionMoved is raised.
"""
from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager

from criteo_kernel import triton_config
from criteo_kernel.artifacts import LINEAGE, REJECTED, ROLLED_BACK, STORED, SUCCESS, SUPERSEDED, served
from criteo_kernel.artifacts import TRITON_CONFIG as CONFIG
from criteo_kernel.storage import reservation, reserve_folder

from ..pipeline.layout import Layout
from .storage import gcs_blob, is_local, storage_path, write_text_atomic

log = logging.getLogger(__name__)
_STAGING = re.compile(r"^\.staging-\d+-(\d+)-[0-9a-f]+$")
STALE_STAGING_S = 6 * 3600  # a push never takes this long: its claim (or staging folder) is a crash's leftover
POINTER_LOCK = ".pointer.lock"  # local repository: the flock serialising read-compare-replace of the pointer


class _Current:
    """`set_production`'s default `expected`: whatever serves when the pointer is read (still
    compare-and-swap: a move between that read and the write raises ProductionMoved)."""

    def __repr__(self) -> str:
        return "CURRENT"


CURRENT = _Current()


class ProductionMoved(RuntimeError):
    """The production pointer no longer names the version the caller expected: nothing was written."""

    def __init__(self, model: str, expected: int | None, actual: int | None):
        self.expected, self.actual = expected, actual
        super().__init__(f"production of {model} moved: expected version {expected}, now version {actual}")


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
        self._fresh_listing()
        out = []
        for p in self.model_dir.iterdir():
            if p.name.isdigit() and (p / SUCCESS).exists():
                out.append(int(p.name))
        return sorted(out)

    def production_version(self) -> int | None:
        return self._production_of(self._read_pointer()[0])

    def _read_pointer(self) -> tuple[str | None, int]:
        """The pointer's text (None: no pointer) and, on gs://, the generation it was read at (0: none).
        On gs:// it is read through the same client that writes it conditionally, never through gcsfs'
        per-process listing cache, which another deploy's write leaves stale."""
        config = self.model_dir / CONFIG
        if is_local(self.model_dir):
            try:
                return config.read_text(), 0
            except FileNotFoundError:
                return None, 0
        return _read_with_generation(gcs_blob(config))

    def _production_of(self, text: str | None) -> int | None:
        """The version a pointer's text names (None: no pointer, nothing promoted yet)."""
        if text is None:  # nothing promoted yet (a pushed version is not production)
            return None
        versions = self.versions()
        pinned = triton_config.pinned_version(text)
        if pinned is None:  # a repository from before the pointer: Triton's `latest` policy
            return versions[-1] if versions else None
        if pinned not in versions:
            raise RuntimeError(f"{self.model_dir / CONFIG} pins version {pinned}, which is not a complete version "
                               f"(complete: {versions}); fix the repository or run `criteo-mlops rollback`")
        return pinned

    def set_production(self, version: int, expected=CURRENT) -> int | None:
        """Point the model's config.pbtxt at `version` (one object write), with the queue delay
        setting in its dynamic_batching; return the previous version.

        Compare-and-swap: only if production is `expected` (a version, or None for no pointer yet)
        when the pointer is written, checked in the same conditional write; else ProductionMoved and
        nothing changes. Default: whatever serves when the pointer is read."""
        if version not in self.versions():
            raise ValueError(f"version {version} of {self.layout.model_name} is not complete in {self.model_dir}")
        text = triton_config.with_version_policy((self.model_dir / str(version) / CONFIG).read_text(), version)
        text = triton_config.with_queue_delay(text, self.max_queue_delay_us)
        text = triton_config.with_instance_group(text, self.instance_kind)
        previous = self._swap_pointer(text, expected)
        log.info("production pointer of %s: %s -> %s", self.layout.model_name, previous, version)
        return previous

    def clear_production(self, expected=CURRENT) -> None:
        """No version serves any more (the first promotion failed): the model config goes away; only
        if production is still `expected` (compare-and-swap, as `set_production`)."""
        self._swap_pointer(None, expected)

    def _swap_pointer(self, text: str | None, expected) -> int | None:
        """Replace (None: delete) the pointer if production is `expected`; return production before."""
        config = self.model_dir / CONFIG
        if is_local(self.model_dir):
            # One machine writes a local repository (the embedded setup, tests): an exclusive flock
            # held across read-compare-replace makes the swap atomic for every deploy on it. A gcsfuse
            # mount is no repository path: Layout addresses it by criteo_model_repository, gs:// in
            # production, and deploys write through the object store's conditional writes below.
            with self._pointer_lock():
                previous = self.production_version()
                self._check_expected(expected, previous)
                if text is not None:
                    write_text_atomic(config, text)
                elif config.exists():
                    config.unlink()
            return previous
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = gcs_blob(config)
        current, generation = _read_with_generation(blob)
        previous = self._production_of(current)
        self._check_expected(expected, previous)
        try:
            if text is not None:
                blob.upload_from_string(text, content_type="text/plain", if_generation_match=generation)
            elif generation:
                blob.delete(if_generation_match=generation)
        except (PreconditionFailed, NotFound):  # written (or deleted) by another deploy since our read
            raise ProductionMoved(self.layout.model_name, previous, self.production_version()) from None
        finally:
            self._fresh_listing()   # gcsfs' cache has not seen this client's write
        return previous

    def _check_expected(self, expected, actual: int | None) -> None:
        if expected is not CURRENT and expected != actual:
            raise ProductionMoved(self.layout.model_name, expected, actual)

    @contextmanager
    def _pointer_lock(self):
        import fcntl

        self.model_dir.mkdir(parents=True, exist_ok=True)
        with open(f"{self.model_dir.path}/{POINTER_LOCK}", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def reject(self, version: int, reason: str) -> None:
        """Take a version out of service for good, keeping its files: marker off, reason on."""
        vdir = self.model_dir / str(version)
        (vdir / REJECTED).write_text(reason + "\n")
        if (vdir / SUCCESS).exists():
            (vdir / SUCCESS).unlink()
        log.warning("version %s rejected: %s", version, reason)

    def supersede(self, version: int, reason: str) -> None:
        """A pushed version whose production moved before it could be promoted: it never serves
        (marker off, reason on, like `reject`), so no rerun promotes it."""
        vdir = self.model_dir / str(version)
        (vdir / SUPERSEDED).write_text(reason + "\n")
        if (vdir / SUCCESS).exists():
            (vdir / SUCCESS).unlink()
        log.warning("version %s superseded: %s", version, reason)

    def is_superseded(self, version: int) -> bool:
        return (self.model_dir / str(version) / SUPERSEDED).exists()

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
            vdir = self.model_dir / str(v)
            claim = self._claim_age_s(vdir)   # not None: a number claimed by a push that never completed
            if v in kept or (claim is not None and claim <= STALE_STAGING_S):
                continue  # a push under way: its version appears once its files are in
            # Folders newer than the kept ones (a fresh rejection) are left alone, but not a dead push's.
            if claim is None and (not newest or v > newest[0]):
                continue
            if (vdir / SUCCESS).exists():  # marker first: a half-deleted version is never "complete"
                (vdir / SUCCESS).unlink()
            vdir.rmdir(recursive=True)
            removed.append(v)
        if removed:
            log.info("pruned versions %s of %s (keeping %s)", removed, self.layout.model_name, sorted(kept))
        self._remove_stale_staging()
        return removed

    def _claim_age_s(self, vdir) -> float | None:
        """Seconds since a push claimed `vdir` (its `_RESERVED`), when it is still incomplete and was
        neither rejected nor superseded; None otherwise."""
        if any((vdir / marker).exists() for marker in (SUCCESS, REJECTED, SUPERSEDED)):
            return None
        claim = reservation(vdir.fs, vdir.path)
        if claim is None:
            return None
        return time.time() - float(claim.get("reserved_at_s", 0))

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
             max_attempts: int = 20) -> int:
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
        owner = {k: lineage.get(k) for k in ("run_key", "dag_id", "run_id")}
        version = 0
        for _ in range(max_attempts):
            version = max(version, *self._all_numeric(), 0) + 1
            final = self.model_dir / str(version)
            # The number is claimed before anything is copied: one writer per number (module doc).
            if not reserve_folder(final.fs, final.path, owner):
                log.info("version %s of %s was claimed by another deploy; trying the next", version,
                         self.layout.model_name)
                continue
            try:
                self._stage(package, final, lineage, version, extra_files or {})
                (final / SUCCESS).touch()   # last: now complete
            except BaseException:
                # An error midway leaves no version: the claim goes too. A process killed outright
                # leaves an incomplete claim (never read: no `_SUCCESS`) for `prune` once stale.
                try:
                    final.rmdir(recursive=True)
                except OSError as exc:  # a read-only bucket keeps it: incomplete, pruned later
                    log.warning("could not remove the incomplete version folder %s: %s", final, exc)
                raise
            log.info("published %s version %s from %s", self.layout.model_name, version, package_url)
            return version
        raise RuntimeError(f"could not reserve a version number in {self.model_dir} after {max_attempts} attempts")

    def _stage(self, package, folder, lineage: dict, version: int, extra_files: dict[str, str]) -> None:
        for src in package.rglob("*"):
            rel = str(src.relative_to(package))
            # Only the serving entries: the rest stays in the package (the lineage names it).
            if src.is_file() and served(rel):
                dst = folder / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                src.copy(dst)
        for name, src_url in extra_files.items():
            storage_path(src_url).copy(folder / name)
        (folder / LINEAGE).write_text(json.dumps({**lineage, "version": version}, indent=2, default=str))

    def _all_numeric(self) -> list[int]:
        if not self.model_dir.exists():
            return []
        self._fresh_listing()
        return [int(p.name) for p in self.model_dir.iterdir() if p.name.isdigit()]

    def _fresh_listing(self) -> None:
        """gcsfs caches folder listings per process: versions pushed since by other deploys must show."""
        fs = self.model_dir.fs
        if is_local(self.model_dir) or not hasattr(fs, "dircache"):
            return
        root = self.model_dir.path.rstrip("/")
        # invalidate_cache(root) drops the root and its parents only: the version folders' listings too
        for key in [k for k in list(fs.dircache) if k == root or k.startswith(root + "/")]:
            fs.dircache.pop(key, None)
        fs.invalidate_cache(root)


def _read_with_generation(blob) -> tuple[str | None, int]:
    """(text, generation) of an object read whole at one generation; (None, 0) when there is none."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    for _ in range(10):
        try:
            blob.reload()
            generation = int(blob.generation)
            return blob.download_as_bytes(if_generation_match=generation).decode(), generation
        except NotFound:
            return None, 0
        except PreconditionFailed:  # rewritten between the two requests: read again
            continue
    raise RuntimeError(f"{blob.name} keeps changing; could not read it at one generation")
