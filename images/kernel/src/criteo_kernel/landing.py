"""The landing contract of a raw day: when a `day_N[.gz]` file counts as complete, and what it was.

A raw day lands whole in one of two ways:

* **an object store** (gs://): an object is visible only once its upload has finished, so the
  object itself is the contract (the sensor asks for the object's exact name, never a prefix);
* **a folder or shared volume**: a file is visible while it is still being written. The writer
  finishes by writing a manifest beside it, `day_N.manifest.json` (`day_N.gz.manifest.json`),
  naming the file's size, sha256 and row count (`write_manifest`, or `criteo-mlops manifest FILE`).
  A day without a manifest counts as landed only once its size and mtime have not changed for a
  settle period (the Airflow side's setting criteo_raw_settle_s; criteo_raw_landing=manifest
  waits for the manifest instead).

Extract records what it read (`FileFacts`: size, sha256, generation, rows) and the validation gate
compares it with the manifest: a day whose rows, size or checksum differ fails hard.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from . import storage

MANIFEST_SUFFIX = ".manifest.json"
# When a day in a folder counts as landed (criteo_raw_landing): its manifest or an unchanged file, or
# only its manifest.
MODES = ("settle", "manifest")
GZIP_MAGIC = b"\x1f\x8b"


def manifest_url(day_url: str) -> str:
    return day_url + MANIFEST_SUFFIX


@dataclass(frozen=True)
class Manifest:
    """What the writer of a raw day says it wrote. Any field may be unknown (None)."""

    rows: int | None = None
    bytes: int | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, url: str, text: str) -> Manifest:
        """The manifest in `text`; ValueError naming the file and field when it is not one."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{url}: not JSON ({exc}); a manifest is "
                             '{"rows": N, "bytes": N, "sha256": "<hex>"}') from None
        if not isinstance(data, dict):
            raise ValueError(f"{url}: expected a JSON object with rows, bytes and/or sha256")
        out = {}
        for key, kind in (("rows", int), ("bytes", int), ("sha256", str)):
            value = data.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ValueError(f"{url}: field {key!r} is {value!r}; expected {kind.__name__}")
            out[key] = value
        if out["sha256"] is not None and (len(out["sha256"]) != 64
                                          or any(c not in "0123456789abcdef" for c in out["sha256"])):
            raise ValueError(f"{url}: field 'sha256' is not 64 lowercase hex digits")
        if all(v is None for v in out.values()):
            raise ValueError(f"{url}: names none of rows, bytes, sha256")
        return cls(**out)

    def to_dict(self) -> dict:
        return asdict(self)


def read_manifest(day_url: str) -> Manifest | None:
    """The manifest beside a raw day, or None when there is none."""
    url = manifest_url(day_url)
    fs, path = storage.fs_path(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return Manifest.parse(url, fh.read().decode("utf-8", "replace"))


class HashingReader:
    """A binary file wrapper that hashes the bytes read through it and remembers the last one.

    Extract reads a raw day once; the checksum and "does it end with a newline" come from the
    same pass. Wrap the stored bytes for the checksum, the decompressed ones for the last byte.
    """

    def __init__(self, fh, hashing: bool = True):
        self._fh = fh
        self._hash = hashlib.sha256() if hashing else None
        self.bytes_read = 0
        self.last_byte = b""

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if data:
            if self._hash is not None:
                self._hash.update(data)
            self.bytes_read += len(data)
            self.last_byte = data[-1:]
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def hexdigest(self) -> str | None:
        return self._hash.hexdigest() if self._hash is not None else None


def is_gzip(url: str) -> bool:
    """The file starts with gzip's magic bytes, whatever its name."""
    fs, path = storage.fs_path(url)
    with fs.open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def describe(url: str, block: int = 8 << 20) -> Manifest:
    """Size, sha256 and row count (lines) of a raw day file, gzip or not (one pass)."""
    import gzip

    fs, path = storage.fs_path(url)
    rows = 0
    with fs.open(path, "rb") as raw:
        stored = HashingReader(raw)
        text = gzip.GzipFile(fileobj=stored) if is_gzip(url) else stored
        last = b""
        while chunk := text.read(block):
            rows += chunk.count(b"\n")
            last = chunk[-1:]
        if last and last != b"\n":
            rows += 1  # the last line has no newline: it still is a row
        return Manifest(rows=rows, bytes=stored.bytes_read, sha256=stored.hexdigest())


def file_sha256(url: str, block: int = 8 << 20) -> str:
    fs, path = storage.fs_path(url)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(day_url: str, manifest: Manifest | None = None) -> Manifest:
    """Write the manifest of a complete raw day (described now unless given): the writer's last step."""
    manifest = manifest or describe(day_url)
    storage.write_json(manifest_url(day_url), manifest.to_dict())
    return manifest
