"""What every runtime shares: the interface a step runs through, and how a run ended."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..pipeline.config import Settings
    from .catalogue import StepSpec


@dataclass(frozen=True)
class StepOutcome:
    """How a step run ended, whatever ran it: what CriteoStepOperator maps to the task's state.

    A runtime returns an outcome once the step has exited; when it never got that far (no pod
    started, the engine unreachable) the runtime raises its own error instead.
    """

    exit_code: int
    result: dict | None          # the step's manifest (criteo_kernel.result), if it wrote one
    log_tail: str = ""
    reason: str | None = None    # the container's termination reason, e.g. OOMKilled
    memory_limit: str | None = None  # the limit it ran under, for the out-of-memory message

    @property
    def summary(self) -> str:
        return (self.result or {}).get("summary") or self.log_tail or "(no log)"


class StepRuntime(ABC):
    """Where steps run: built from the run's settings, one instance per task attempt.

    `start` runs a step to its exit and returns the outcome; a runtime that waits elsewhere (pods,
    deferred to the triggerer) raises TaskDeferred, and `resume` takes the trigger's event.
    """

    name: ClassVar[str]

    def __init__(self, settings: Settings | None = None):
        self.settings = settings

    @classmethod
    def problems(cls, settings: Settings) -> list[str]:
        """What in `settings` would stop this runtime, each naming the setting."""
        return []

    @abstractmethod
    def start(self, spec: StepSpec, argv: list[str], *, task_id: str, context: Any = None) -> StepOutcome:
        """Run the step to its exit (or raise TaskDeferred to wait in the triggerer)."""

    def resume(self, spec: StepSpec, argv: list[str], *, task_id: str, context: Any, event: dict) -> StepOutcome:
        raise RuntimeError(f"the {self.name} runtime never defers, so there is no deferred step to resume")

    @abstractmethod
    def kill(self) -> None:
        """Stop the step started by this instance (the task is being killed)."""


class StepFailed(Exception):
    """A step exited non-zero, for callers outside a task (scripts, benches): `exit_code`, and the
    manifest it wrote, if any (a failed validation's report)."""

    def __init__(self, message: str, exit_code: int, result: dict | None):
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result
