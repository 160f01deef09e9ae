"""A hook onto the folder where raw Criteo days land (criteo_raw_url): `day_N` or `day_N.gz`."""
from __future__ import annotations

from criteo_kernel.schema import day_file_names, day_of_file

from .storage import storage_path


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

    def latest_day(self, num_days: int | None = None) -> int | None:
        """The highest N that has landed (within day_0..day_{num_days-1})."""
        folder = storage_path(self.raw_url)
        if not folder.exists():
            return None
        days = [n for n in (day_of_file(p.name) for p in folder.iterdir())
                if n is not None and (num_days is None or n < num_days)]
        return max(days) if days else None
