"""A hook onto the folder where raw Criteo days land (criteo_raw_url): `day_N` or `day_N.gz`.

It also applies the landing contract (criteo_kernel.landing): when a day that is visible counts as
complete. On gs:// an object is whole once visible; in a folder the file's manifest says so, or
the file must have been left unchanged for a settle period.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from criteo_kernel.landing import MANIFEST_SUFFIX, MODES, Manifest
from criteo_kernel.schema import day_file_names, day_of_file

from .storage import is_local, storage_path


class NotARawDay(ValueError):
    """What landed under a day's name is no raw day file (a directory): waiting cannot help."""


@dataclass(frozen=True)
class Landing:
    """Whether raw day N has landed whole: its URL when it has; what it waits for when not."""

    url: str | None
    complete: bool
    reason: str


class RawDataHook:
    """The raw landing folder, a local path or gs://bucket/prefix.

    :param raw_url: the folder (Variable criteo_raw_url).
    """

    def __init__(self, raw_url: str):
        self.raw_url = str(raw_url).rstrip("/")

    def candidates(self, day: int) -> list[str]:
        """The URLs day N may land at, in the order they are looked for."""
        return [f"{self.raw_url}/{name}" for name in day_file_names(int(day))]

    def find_day(self, day: int) -> str | None:
        """The URL of raw day N, or None when it has not landed."""
        for url in self.candidates(day):
            if storage_path(url).exists():
                return url
        return None

    def landing(self, day: int, mode: str = "settle", settle_s: float = 60.0, now: float | None = None) -> Landing:
        """Has raw day N landed whole? (module doc). `mode`: settle | manifest (criteo_raw_landing).

        Raises NotARawDay for a directory under the day's name.
        """
        if mode not in MODES:
            raise ValueError(f"criteo_raw_landing={mode!r}: expected one of {MODES}")
        url = self.find_day(day)
        if url is None:
            return Landing(None, False, f"{' or '.join(self.candidates(day))} not there yet")
        path = storage_path(url)
        if path.is_dir():
            raise NotARawDay(f"{url} is a directory, not a raw day file: a raw day is one tab-separated file "
                             f"(day_{day} or day_{day}.gz). Replace the directory with one file, then clear the "
                             "day's run")
        stat = path.stat()
        size = int(stat.get("size") or 0)
        manifest_path = storage_path(url + MANIFEST_SUFFIX)
        if manifest_path.exists():
            try:
                manifest = Manifest.parse(str(manifest_path), manifest_path.read_text())
            except ValueError as exc:
                raise NotARawDay(f"the landing manifest of {url} is broken: {exc}") from None
            if manifest.bytes is not None and manifest.bytes != size:
                return Landing(url, False, f"{url} has {size} bytes, its manifest says {manifest.bytes}: "
                                           "still being written")
            return Landing(url, True, f"{url} has its manifest ({manifest.rows} rows, {size} bytes)")
        if mode == "manifest":
            return Landing(url, False, f"{url} is there; waiting for its manifest {url}{MANIFEST_SUFFIX} "
                                       "(criteo_raw_landing=manifest)")
        if not is_local(url):  # an object is visible only once its upload is complete
            return Landing(url, True, f"{url}: object (generation {stat.get('generation')}, {size} bytes)")
        # A file written in place changes size and mtime while it is written: one unchanged for the
        # settle period is done. mtime is compared with this host's clock (NFS: keep clocks in sync).
        age = (time.time() if now is None else now) - float(stat.get("mtime") or 0)
        if age < settle_s:
            return Landing(url, False, f"{url} ({size} bytes) changed {age:.0f}s ago; landed once unchanged for "
                                       f"{settle_s:g}s (criteo_raw_settle_s) or once {url}{MANIFEST_SUFFIX} "
                                       "is written")
        return Landing(url, True, f"{url} ({size} bytes) unchanged for {age:.0f}s")

    def latest_day(self, num_days: int | None = None) -> int | None:
        """The highest N that has landed (within day_0..day_{num_days-1})."""
        folder = storage_path(self.raw_url)
        if not folder.exists():
            return None
        days = [n for n in (day_of_file(p.name) for p in folder.iterdir())
                if n is not None and (num_days is None or n < num_days)]
        return max(days) if days else None
