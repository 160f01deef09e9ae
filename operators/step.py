"""CriteoStepOperator: one pipeline step (operators/runtime/catalogue.py) as one task.

Its flags come from two places: `arguments`, what the run's plan decides (output locations,
settings), and `inputs`, what upstream tasks produced (their declared outputs, e.g.
`train.output["checkpoint"]`). The step's result manifest is the task's return value, and each
output the step declares is pushed as an XCom of its own, so downstream tasks consume
`task.output["<key>"]`, TFX-style.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from .links.data_docs import DataDocsLink
from .runtime.catalogue import STEPS


class CriteoStepOperator(BaseOperator):
    """Run one pipeline step on the configured runtime (Variable criteo_runtime).

    A step exiting with one of its data-error codes fails the task at once, without retry, after
    pushing its result as the XCom `step_result` (a failed validation's report and data docs link).

    :param step: name of the step, a key of operators.runtime.catalogue.STEPS.
    :param arguments: the step's CLI flags decided by the plan, as a dict (templated; may be an XComArg).
    :param inputs: flags whose values are upstream outputs, e.g. {"--checkpoint": train.output["checkpoint"]}
        (templated).
    """

    template_fields: Sequence[str] = ("arguments", "inputs")
    ui_color = "#c5e3c5"
    operator_extra_links = (DataDocsLink(),)

    def __init__(self, *, step: str, arguments: dict[str, Any] | list[str] | None = None,
                 inputs: dict[str, Any] | None = None, **kwargs):
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; known: {sorted(STEPS)}")
        super().__init__(**kwargs)
        self.step = step
        self.arguments = arguments or {}
        self.inputs = inputs or {}
        self._runtime = None

    def argv(self) -> list[str]:
        """The rendered flags, plan's and upstream's, as the step's argv."""
        from airflow.sdk.exceptions import AirflowFailException

        from .runtime.argv import to_argv

        if not self.inputs:
            return to_argv(self.arguments)
        if not isinstance(self.arguments, dict):
            raise AirflowFailException(f"{self.task_id}: inputs need the arguments as a dict, got {self.arguments!r}")
        both = sorted(set(self.arguments) & set(self.inputs))
        if both:
            raise AirflowFailException(f"{self.task_id}: {both} given both by the plan and by an upstream task")
        return to_argv({**self.arguments, **self.inputs})

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from .pipeline.config import PipelineConfig
        from .runtime import StepFailed, runtime_for

        spec = STEPS[self.step]
        self._runtime = runtime_for(PipelineConfig.load().runtime)
        try:
            result = self._runtime.run(spec, self.argv())
        except StepFailed as exc:
            if exc.result is not None:
                context["ti"].xcom_push(key="step_result", value=exc.result)
            if exc.exit_code in spec.data_error_exit_codes:
                raise AirflowFailException(str(exc)) from None
            raise
        missing = [key for key in spec.outputs if key not in result]
        if missing:
            raise AirflowException(f"step {spec.name} declares the outputs {list(spec.outputs)}, but its result "
                                   f"has no {missing}: {sorted(result)}")
        for key in spec.outputs:
            context["ti"].xcom_push(key=key, value=result[key])
        return result

    def on_kill(self) -> None:
        if self._runtime is not None:
            self._runtime.kill()
