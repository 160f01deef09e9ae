"""What every runtime shares: the failure of a step, with its exit code and result manifest."""
from __future__ import annotations


class StepFailed(Exception):
    """A step exited non-zero. `exit_code` tells retryable from data errors (see the catalogue);
    `result` is the manifest it wrote, if any (a failed validation's report)."""

    def __init__(self, message: str, exit_code: int, result: dict | None):
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result
