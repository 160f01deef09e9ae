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

    :param step: name of the step, a key of operators.runtime.catalogue.STEPS (templated: the plan may
        choose it, e.g. the trainer's step).
    :param arguments: the step's CLI flags decided by the plan, as a dict (templated; may be an XComArg).
    :param inputs: flags whose values are upstream outputs, e.g. {"--checkpoint": train.output["checkpoint"]}
        (templated).
    """

    template_fields: Sequence[str] = ("step", "arguments", "inputs")
    ui_color = "#c5e3c5"
    operator_extra_links = (DataDocsLink(),)

    def __init__(self, *, step: Any, arguments: dict[str, Any] | list[str] | None = None,
                 inputs: dict[str, Any] | None = None, **kwargs):
        if isinstance(step, str) and "{{" not in step and step not in STEPS:
            raise ValueError(f"unknown step {step!r}; known: {sorted(STEPS)}")
        super().__init__(**kwargs)
        self.step = step
        self.arguments = arguments or {}
        self.inputs = inputs or {}
        self._runtime = None
        self._container = None
        self._pod_settings = None

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
        from airflow.sdk.exceptions import AirflowFailException

        from .pipeline.config import PipelineConfig

        if self.step not in STEPS:
            raise AirflowFailException(f"{self.task_id}: unknown step {self.step!r}; known: {sorted(STEPS)}")

        cfg = PipelineConfig.load()
        if cfg.runtime == "kubernetes":
            return self._run_pod(context, cfg.base_url)
        if cfg.runtime == "docker":
            return self._run_container(context, cfg.base_url)
        from .runtime import runtime_for

        return self._run_local(context, runtime_for(cfg.runtime))

    def _run_local(self, context, runtime) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from .runtime import StepFailed

        spec = STEPS[self.step]
        self._runtime = runtime
        try:
            result = runtime.run(spec, self.argv())
        except StepFailed as exc:
            if exc.result is not None:
                context["ti"].xcom_push(key="step_result", value=exc.result)
            if exc.exit_code in spec.data_error_exit_codes:
                raise AirflowFailException(str(exc)) from None
            raise
        return self._outputs(context, result)

    def _outputs(self, context, result: dict) -> dict:
        from airflow.sdk.exceptions import AirflowException

        spec = STEPS[self.step]
        missing = [key for key in spec.outputs if key not in result]
        if missing:
            raise AirflowException(f"step {spec.name} declares the outputs {list(spec.outputs)}, but its result "
                                   f"has no {missing}: {sorted(result)}")
        for key in spec.outputs:
            context["ti"].xcom_push(key=key, value=result[key])
        return result

    # -- the pod runtime ----------------------------------------------------------------------
    # The pod is the provider's KubernetesPodOperator, built per attempt from settings
    # (runtime/kubernetes.py). Its deferral is taken over by this operator: the trigger's event
    # comes back to `resume_pod`, which rebuilds the same pod operator and hands it the event, so
    # a deferred step never resumes a method this operator does not have.

    def _pod_operator(self, base_url: str | None = None):
        from .runtime.kubernetes import PodSettings, pod_operator

        self._pod_settings = PodSettings.load(base_url)
        return pod_operator(STEPS[self.step], self.argv(), task_id=self.task_id, settings=self._pod_settings)

    def _run_pod(self, context, base_url: str) -> dict:
        self._container = self._pod_operator(base_url)
        run = self._container.execute_async if self._container.deferrable else self._container.execute_sync
        return self._drive_pod(context, run, context)

    def resume_pod(self, context, event: dict) -> dict:
        """Where the pod's trigger resumes the task (in the deferrable mode)."""
        self._container = self._pod_operator()
        return self._drive_pod(context, self._container.trigger_reentry, context, event)

    def _drive_pod(self, context, call, *args) -> dict:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
        from urllib3.exceptions import HTTPError

        from .runtime.kubernetes import pod_failure

        spec = STEPS[self.step]
        pod = self._container
        pod.step_result = pod.step_exit_code = pod.step_log_tail = pod.step_reason = None
        try:
            call(*args)
        except TaskDeferred as deferred:
            self.defer(trigger=deferred.trigger, method_name="resume_pod", kwargs=deferred.kwargs,
                       timeout=deferred.timeout)
        except AirflowException as exc:
            result = pod.step_result
            if result is not None:
                context["ti"].xcom_push(key="step_result", value=result)
            summary = (result or {}).get("summary") or pod.step_log_tail or str(exc)
            failure = pod_failure(spec, self._pod_settings, pod.step_exit_code, pod.step_reason, summary)
            if failure is None:
                raise
            if isinstance(failure, AirflowFailException):
                raise failure from None
            raise failure from exc
        except (OSError, HTTPError) as exc:  # the API server is unreachable (urllib3's errors)
            raise AirflowException(f"step {spec.name}: the Kubernetes API server is unreachable "
                                   f"({type(exc).__name__}: {exc}); the task will be retried") from exc
        if pod.step_result is None:
            if pod.step_exit_code:   # e.g. 143: stopped by SIGTERM (the pod deleted) before it finished
                raise pod_failure(spec, self._pod_settings, pod.step_exit_code, pod.step_reason,
                                  pod.step_log_tail or "(no log)")
            raise AirflowException(f"step {spec.name}: its pod ended with code {pod.step_exit_code} but its log has "
                                   f"no STEP_RESULT line (the step's result contract, criteo_kernel.result)")
        return self._outputs(context, pod.step_result)

    # -- the Docker runtime (the compose stack) -----------------------------------------------
    # DockerOperator does not defer, so running it inside this task is safe; its return value is
    # the container's log lines, whose last STEP_RESULT line is the step's result.

    def _run_container(self, context, base_url: str) -> dict:
        from airflow.sdk.exceptions import AirflowException

        from .runtime.docker import (
            DockerSettings,
            container_failure,
            docker_operator,
            exit_code_of_failure,
            result_from_log,
        )

        spec = STEPS[self.step]
        settings = DockerSettings.load(base_url)
        self._container = docker_operator(spec, self.argv(), task_id=self.task_id, settings=settings)
        try:
            lines = self._container.execute(context)
        except AirflowException as exc:
            code = exit_code_of_failure(exc)
            logs = "\n".join(line.decode() if isinstance(line, bytes) else str(line)
                             for line in getattr(exc, "logs", None) or [])
            result = result_from_log(logs)
            if result is not None:
                context["ti"].xcom_push(key="step_result", value=result)
            summary = (result or {}).get("summary") or "\n".join(logs.splitlines()[-40:]) or str(exc)
            raise container_failure(spec, code, summary, self._container.mem_limit) from exc
        text = "\n".join(lines) if isinstance(lines, list) else str(lines or "")
        result = result_from_log(text)
        if result is None:
            raise AirflowException(f"step {spec.name}: its container's log has no STEP_RESULT line")
        return self._outputs(context, result)

    def on_kill(self) -> None:
        if self._runtime is not None:
            self._runtime.kill()
        if self._container is not None:
            self._container.on_kill()
