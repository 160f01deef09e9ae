"""The model's Triton config (config.pbtxt): the one place that renders, patches and parses it.

Export renders it into every package (`render`); deploy copies the promoted version's into the
model folder with the version policy pinned to that version (`with_version_policy`) and the dynamic
batcher's queue delay from the setting criteo_triton_max_queue_delay_us (`with_queue_delay`) and the
instance kind from criteo_triton_instance_kind (`with_instance_group`); the model repository reads
back which version serves (`pinned_version`). Patches touch one field and keep the rest of the
text as exported, so a package exported by older code stays deployable.
"""
from __future__ import annotations

import re

from .signature import (
    CATEGORICAL_INPUT,
    DENSE_INPUT,
    MAX_BATCH_SIZE,
    MODEL_NAME,
    NUM_CATEGORICAL,
    NUM_DENSE,
    OUTPUT,
)

# The dynamic batcher's max_queue_delay_microseconds: how long Triton holds a request that arrives
# while the model instance is idle, hoping for more to batch with it. Triton still batches every
# request that queued while the instance was busy (the next execute takes them all, up to
# MAX_BATCH_SIZE), so under load requests are batched just the same; only a request that finds the
# instance idle no longer waits. With one instance the wait cannot help: the instance would sit idle
# for it. Hence no wait by default; images/triton/README.md has the measurements.
DEFAULT_QUEUE_DELAY_US = 0
# A second: a longer wait is a typo (Triton's own limit is far above).
MAX_ALLOWED_QUEUE_DELAY_US = 1_000_000
# The pipeline setting the queue delay comes from: named in errors, so the user knows what to fix.
QUEUE_DELAY_SETTING = "criteo_triton_max_queue_delay_us"

# Where the model's instances run. KIND_CPU: onnxruntime's CPU provider, as the embedded default
# (the pytriton tritonserver has no GPU) and the `cpu` overlay; KIND_GPU: one instance on each GPU
# (or MIG slice) the pod is given, model.py then runs onnxruntime's CUDA provider on the instance's
# device (k8s/serving/overlays/gpu, mig-*; docs/serving.md "The GPU").
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")
DEFAULT_INSTANCE_KIND = "KIND_CPU"
INSTANCE_KIND_SETTING = "criteo_triton_instance_kind"

_POLICY = re.compile(r"version_policy\s*:?\s*\{(?:[^{}]|\{[^{}]*\})*\}", re.S)
_SPECIFIC = re.compile(r"version_policy\s*:?\s*\{\s*specific\s*:?\s*\{\s*versions\s*:\s*\[?\s*(\d+)\s*\]?\s*\}\s*\}")
_QUEUE_DELAY = re.compile(r"(max_queue_delay_microseconds\s*:\s*)(\d+)")
_DYNAMIC_BATCHING = re.compile(r"dynamic_batching\s*\{")
_INSTANCE_GROUP = re.compile(r"instance_group\s*:?\s*\[(?:[^\[\]{}]|\{[^{}]*\})*\]", re.S)


def render(name: str = MODEL_NAME, max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> str:
    """The config.pbtxt export writes into a package: Triton's `latest` policy until deploy pins a version."""
    return f"""name: "{name}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{ name: "{DENSE_INPUT}" data_type: TYPE_FP32 dims: [ {NUM_DENSE} ] }},
  {{ name: "{CATEGORICAL_INPUT}" data_type: TYPE_INT64 dims: [ {NUM_CATEGORICAL} ] }}
]
output [
  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ 1 ] }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
instance_group [ {{ kind: {DEFAULT_INSTANCE_KIND} count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: {parse_queue_delay(max_queue_delay_us)} }}
"""


def parse_queue_delay(value) -> int:
    """A queue delay as whole microseconds; a ValueError naming the setting if it is not one."""
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) > MAX_ALLOWED_QUEUE_DELAY_US:
        raise ValueError(f"{QUEUE_DELAY_SETTING}={value!r}: expected a whole number of microseconds from 0 to "
                         f"{MAX_ALLOWED_QUEUE_DELAY_US} (the dynamic batcher's max_queue_delay_microseconds; "
                         "0 = no wait)")
    return int(text)


def with_version_policy(config_text: str, version: int) -> str:
    """The config with its version policy pinned to one version (added if it has none)."""
    policy = f"version_policy: {{ specific: {{ versions: [ {int(version)} ] }} }}"
    if _POLICY.search(config_text):
        return _POLICY.sub(policy, config_text, count=1)
    return config_text.rstrip("\n") + "\n" + policy + "\n"


def with_queue_delay(config_text: str, delay_us: int) -> str:
    """The config with its dynamic batcher's max_queue_delay_microseconds set to `delay_us`; the
    rest unchanged. A config without dynamic batching is left as it is."""
    delay_us = parse_queue_delay(delay_us)
    if _QUEUE_DELAY.search(config_text):
        return _QUEUE_DELAY.sub(lambda m: f"{m.group(1)}{delay_us}", config_text, count=1)
    if _DYNAMIC_BATCHING.search(config_text):   # `dynamic_batching { }`: Triton's default delay, 0
        return _DYNAMIC_BATCHING.sub(lambda m: f"{m.group(0)} max_queue_delay_microseconds: {delay_us}",
                                     config_text, count=1)
    return config_text


def parse_instance_kind(value) -> str:
    """KIND_CPU or KIND_GPU; a ValueError naming the setting otherwise."""
    text = str(value).strip()
    if text not in INSTANCE_KINDS:
        raise ValueError(f"{INSTANCE_KIND_SETTING}={value!r}: expected one of {', '.join(INSTANCE_KINDS)} (where "
                         "Triton runs the model's instances: KIND_GPU on the GPU or MIG slice the Triton pod "
                         "requests, with onnxruntime's CUDA provider; KIND_CPU on the CPU)")
    return text


def with_instance_group(config_text: str, kind: str) -> str:
    """The config with one instance of `kind` (per GPU for KIND_GPU: Triton's default when no
    `gpus` are listed); the rest unchanged. A config without an instance_group gets one."""
    group = f"instance_group [ {{ kind: {parse_instance_kind(kind)} count: 1 }} ]"
    if _INSTANCE_GROUP.search(config_text):
        return _INSTANCE_GROUP.sub(group, config_text, count=1)
    return config_text.rstrip("\n") + "\n" + group + "\n"


def instance_kind(config_text: str) -> str | None:
    """The kind of the config's first instance group; None when it has none."""
    m = _INSTANCE_GROUP.search(config_text)
    kind = re.search(r"kind\s*:\s*(KIND_\w+)", m.group(0)) if m else None
    return kind.group(1) if kind else None


def pinned_version(config_text: str) -> int | None:
    """The one version the policy names; None for any other policy (`latest`, or none)."""
    m = _SPECIFIC.search(config_text)
    return int(m.group(1)) if m else None


def queue_delay(config_text: str) -> int | None:
    """The dynamic batcher's max_queue_delay_microseconds; None when the config does not set one."""
    m = _QUEUE_DELAY.search(config_text)
    return int(m.group(2)) if m else None
