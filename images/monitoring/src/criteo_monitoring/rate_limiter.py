"""Pacing the inference client's requests."""
from __future__ import annotations

import threading
import time


class RateLimiter:
    """At most `rate` starts per second (0: no limit), evenly spaced."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(self.next, now)
            self.next = start + self.interval
        if start > now:
            time.sleep(start - now)
