"""CriteoStepOperator: one pipeline step (operators/runtime/catalogue.py) as one task.

Its flags come from two places: `arguments`, what the run's plan decides (output locations,
settings), and `inputs`, what upstream tasks produced (their declared outputs, e.g.
`train.output["checkpoint"]`). The step's result manifest is the task's return value, and each
output the step declares is pushed as an XCom of its own, so downstream tasks consume
`task.output["<key>"]`, TFX-style. Where it runs is the run's settings' criteo_runtime: one
StepRuntime (operators/runtime), one StepOutcome, mapped to the task's state here only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from .links.data_docs import DataDocsLink
from .runtime.catalogue import STEPS


class CriteoStepOperator(BaseOperator):
    """Run one pipeline step on the run's runtime (the setting criteo_runtime).

    A step exiting with one of its data-error codes, or killed for running out of memory, fails
    the task at once, without retry, after pushing its result as the XCom `step_result` (a failed
    validation's report and data docs link). Any other failure is retried.

    :param step: name of the step, a key of operators.runtime.catalogue.STEPS (templated: the plan may
        choose it, e.g. the trainer's step).
    :param settings: the run's settings, as its first task decided them (templated: `plan["settings"]`).
    :param arguments: the step's CLI flags decided by the plan, as a dict (templated; may be an XComArg).
    :param inputs: flags whose values are upstream outputs, e.g. {"--checkpoint": train.output["checkpoint"]}
        (templated).
    """

    template_fields: Sequence[str] = ("step", "settings", "arguments", "inputs")
    ui_color = "#c5e3c5"
    operator_extra_links = (DataDocsLink(),)

    def __init__(self, *, step: Any, settings: Any = None, arguments: dict[str, Any] | list[str] | None = None,
                 inputs: dict[str, Any] | None = None, **kwargs):
        if isinstance(step, str) and "{{" not in step and step not in STEPS:
            raise ValueError(f"unknown step {step!r}; known: {sorted(STEPS)}")
        super().__init__(**kwargs)
        self.step = step
        self.settings = settings
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
        return self._run(context, lambda runtime, spec: runtime.start(
            spec, self.argv(), task_id=self.task_id, context=context))

    def resume(self, context, event: dict) -> dict:
        """Where a deferred step's trigger resumes the task."""
        return self._run(context, lambda runtime, spec: runtime.resume(
            spec, self.argv(), task_id=self.task_id, context=context, event=event))

    def _run(self, context, call) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

        from .pipeline.config import Settings, SettingsError
        from .runtime import runtime_class

        if self.step not in STEPS:
            raise AirflowFailException(f"{self.task_id}: unknown step {self.step!r}; known: {sorted(STEPS)}")
        if self.settings is None:
            raise AirflowFailException(f"{self.task_id}: no settings were handed to this step; pass the run's, "
                                       f"e.g. settings=plan['settings'] (operators/pipeline/config.py)")
        spec = STEPS[self.step]
        try:
            settings = Settings.of(self.settings)
            self._runtime = runtime_class(settings.runtime.name)(settings)
        except (SettingsError, ValueError) as exc:
            raise AirflowFailException(str(exc)) from None
        try:
            outcome = call(self._runtime, spec)
        except TaskDeferred as deferred:
            self.defer(trigger=deferred.trigger, method_name="resume", kwargs=deferred.kwargs,
                       timeout=deferred.timeout)
        return self._finish(context, spec, outcome)

    def _finish(self, context, spec, outcome) -> dict:
        """The one place a step's outcome becomes the task's state."""
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from .runtime.container import out_of_memory

        if outcome.exit_code != 0:
            if outcome.result is not None:
                context["ti"].xcom_push(key="step_result", value=outcome.result)
            if outcome.reason == "OOMKilled":
                raise out_of_memory(spec, outcome.exit_code, outcome.memory_limit, outcome.summary)
            if outcome.exit_code in spec.data_error_exit_codes:
                raise AirflowFailException(f"step {spec.name} exited with code {outcome.exit_code} "
                                           f"(bad input: no retry):\n{outcome.summary}")
            raise AirflowException(f"step {spec.name} exited with code {outcome.exit_code}:\n{outcome.summary}")
        if outcome.result is None:
            raise AirflowException(f"step {spec.name} exited with code 0 but gave no result (no STEP_RESULT line "
                                   f"or $STEP_RESULT_PATH: the step's result contract, criteo_kernel.result)")
        missing = [key for key in spec.outputs if key not in outcome.result]
        if missing:
            raise AirflowException(f"step {spec.name} declares the outputs {list(spec.outputs)}, but its result "
                                   f"has no {missing}: {sorted(outcome.result)}")
        for key in spec.outputs:
            context["ti"].xcom_push(key=key, value=outcome.result[key])
        return outcome.result

    def on_kill(self) -> None:
        if self._runtime is not None:
            self._runtime.kill()
