"""The step catalogue: every pipeline step, declared once, whatever runs it.

A step is a CLI in one of the images under images/ (`python -m <package> <command> ARGS`), with
the resources it needs, the result keys it declares as outputs (which downstream tasks consume
as `task.output["<key>"]`), and the exit codes that mean "the input is bad": retrying cannot
help, so the task fails at once (criteo_kernel.result). The runtime (local processes or pods)
decides where it runs; nothing here depends on that. A step's name is its command in its image
(`python -m <package> <name>`): the command table is the kernel's (criteo_kernel.commands).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from criteo_kernel import commands
from criteo_kernel.result import BAD_DATA, FAILED, UNREADABLE_INPUT

# image -> the package its entry point runs (`python -m <package>`)
IMAGES = {
    "merlin": "criteo_merlin",          # images/merlin: NVTabular, PyTorch, ONNX (GPU)
    "hugectr": "criteo_merlin",         # images/merlin, target hugectr: the same steps on HugeCTR's image
    "validator": "criteo_validator",    # images/validator: Great Expectations
    "monitoring": "criteo_monitoring",  # images/monitoring: inference client, monitor, request_log_to_day
}


@dataclass(frozen=True)
class StepSpec:
    name: str
    image: str
    outputs: tuple[str, ...] = ()   # result keys pushed as XComs of their own
    gpu: bool = False
    data_error_exit_codes: tuple[int, ...] = ()
    reads_gcs: bool = True          # False: the step needs its data as files (a mount), not gs:// URLs
    cpu: str = "2"
    memory: str = "8Gi"
    capabilities: tuple[str, ...] = ()  # Linux capabilities added to the container (all others dropped)

    @property
    def module(self) -> str:
        return IMAGES[self.image]

    @property
    def command(self) -> tuple[str, ...]:
        """The arguments of `python -m <module>` before the step's own."""
        return commands.command_line(self.module, self.name)

    def resources(self, gpus: int = 1, override: dict[str, str] | None = None) -> tuple[str, str]:
        """(cpu, memory) of one run with `gpus` GPUs: a GPU step's cpu and memory are per GPU, since
        each GPU gets a dask worker (preprocess) or a trainer process with its own CPUs and host memory.
        `override`: {"cpu": ..., "memory": ...} replacing the catalogue's (criteo_step_resources)."""
        n = gpus if self.gpu else 1
        cpu, memory = (override or {}).get("cpu", self.cpu), (override or {}).get("memory", self.memory)
        c, m = CPU.fullmatch(cpu), MEMORY.fullmatch(memory)
        if not c or not m:
            raise ValueError(f"step {self.name}: cpu {cpu!r} / memory {memory!r}: expected e.g. 2 or 500m / 8Gi")
        return f"{int(c.group(1)) * n}{c.group(2)}", f"{int(m.group(1)) * n}{m.group(2)}"


CPU = re.compile(r"(\d+)(m?)")           # cores, or millicores
MEMORY = re.compile(r"(\d+)([KMGT]i)")   # binary units, as Kubernetes writes them

STEPS = {
    # exit 4: the input is no raw day file (a directory, unreadable, a wrong name or encoding);
    # `input` identifies the raw file read (size, sha256, generation): part of the run's identity
    "extract": StepSpec("extract", "merlin", outputs=("output", "input"), data_error_exit_codes=(BAD_DATA,)),
    # exit 1: a hard expectation failed; exit 2: the input or the suite cannot be read
    "validate": StepSpec("validate", "validator", outputs=("profile",),
                         data_error_exit_codes=(FAILED, UNREADABLE_INPUT), memory="4Gi"),
    "reference": StepSpec("reference", "validator", outputs=("output",), memory="1Gi"),
    "preprocess": StepSpec("preprocess", "merlin", outputs=("partitions", "workflow"), gpu=True, memory="32Gi"),
    "train": StepSpec("train", "merlin", outputs=("checkpoint",), gpu=True, memory="32Gi"),
    # HugeCTR trains on all the pod's GPUs and reads no gs:// (criteo_merlin.hugectr.train_hugectr);
    # it binds its threads and memory to the GPUs' NUMA nodes, which needs CAP_SYS_NICE: HugeCTR's
    # docs run every container with `--cap-add SYS_NICE` (README.md, docs/source/hugectr_user_guide.md)
    "train_hugectr": StepSpec("train_hugectr", "hugectr", outputs=("checkpoint",), gpu=True, memory="32Gi",
                              reads_gcs=False, capabilities=("SYS_NICE",)),
    "export": StepSpec("export", "merlin", outputs=("package",)),
    "evaluate": StepSpec("evaluate", "merlin", outputs=("candidate", "smoke_rows")),
    "synth": StepSpec("synth", "merlin"),
    # exit 4: bad input or a raw day that exists with other content; exit 3 (Triton failing, labels
    # not all in yet) is retried.
    "replay": StepSpec("replay", "monitoring", data_error_exit_codes=(BAD_DATA,), memory="2Gi"),
    "request_log_to_day": StepSpec("request_log_to_day", "monitoring", outputs=("output",),
                                   data_error_exit_codes=(BAD_DATA,), memory="4Gi"),
}
