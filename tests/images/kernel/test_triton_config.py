"""config.pbtxt: rendered by export, patched by deploy (version pin, queue delay), parsed back."""
import pytest

from criteo_kernel import signature, triton_config
from criteo_kernel.triton_config import (
    parse_queue_delay,
    pinned_version,
    queue_delay,
    with_queue_delay,
    with_version_policy,
)

pytestmark = pytest.mark.unit
CONFIG = triton_config.render()


def test_the_rendered_config_declares_the_signature():
    assert 'name: "criteo_dcn"' in CONFIG and 'backend: "python"' in CONFIG
    assert f"max_batch_size: {signature.MAX_BATCH_SIZE}" in CONFIG
    assert '{ name: "dense_raw" data_type: TYPE_FP32 dims: [ 13 ] }' in CONFIG
    assert '{ name: "cat_hash" data_type: TYPE_INT64 dims: [ 26 ] }' in CONFIG
    assert '{ name: "ctr" data_type: TYPE_FP32 dims: [ 1 ] }' in CONFIG
    assert "version_policy: { latest: { num_versions: 1 } }" in CONFIG   # deploy pins it to production
    # no wait for more requests by default (a request that finds the model idle runs at once);
    # deploy writes the setting criteo_triton_max_queue_delay_us over it
    assert "dynamic_batching { max_queue_delay_microseconds: 0 }" in CONFIG
    assert triton_config.DEFAULT_QUEUE_DELAY_US == 0 and triton_config.MAX_ALLOWED_QUEUE_DELAY_US == 1_000_000
    other = triton_config.render(max_queue_delay_us=500)
    assert other == CONFIG.replace("max_queue_delay_microseconds: 0", "max_queue_delay_microseconds: 500")


def test_render_patch_parse_round_trip():
    assert pinned_version(CONFIG) is None and queue_delay(CONFIG) == 0   # the package ships `latest`
    deployed = with_queue_delay(with_version_policy(CONFIG, 7), 250)
    assert pinned_version(deployed) == 7 and queue_delay(deployed) == 250 and "latest" not in deployed
    assert deployed.count("version_policy") == 1 and deployed.count("max_queue_delay_microseconds") == 1
    again = with_queue_delay(with_version_policy(deployed, 12), 0)
    assert pinned_version(again) == 12 and queue_delay(again) == 0
    assert again == with_version_policy(CONFIG, 12)   # only the two fields ever change


def test_version_policy_is_added_when_missing():
    assert pinned_version(with_version_policy('name: "m"', 3)) == 3


def test_queue_delay_rewrites_only_the_delay():
    old = CONFIG.replace("max_queue_delay_microseconds: 0", "max_queue_delay_microseconds: 500")  # exported before
    assert with_queue_delay(old, 0) == CONFIG
    assert with_queue_delay('dynamic_batching { }', 100) == 'dynamic_batching { max_queue_delay_microseconds: 100 }'
    assert with_queue_delay('name: "m"', 100) == 'name: "m"'   # no dynamic batching: left alone
    assert queue_delay('name: "m"') is None


@pytest.mark.parametrize("value", ["-1", "500us", "0.5", "", "1000001", "1e3"])
def test_an_invalid_queue_delay_names_the_setting(value):
    with pytest.raises(ValueError, match=r"criteo_triton_max_queue_delay_us=.*expected a whole number of micro"):
        parse_queue_delay(value)
    with pytest.raises(ValueError, match="criteo_triton_max_queue_delay_us"):
        with_queue_delay(CONFIG, value)


def test_valid_queue_delays():
    assert parse_queue_delay(0) == 0 and parse_queue_delay(" 250 ") == 250 and parse_queue_delay("1000000") == 1_000_000


def test_the_instance_kind_rewrites_only_the_instance_group():
    """Export writes KIND_CPU (the embedded default's); deploy writes the setting
    criteo_triton_instance_kind over it, e.g. KIND_GPU for the GPU overlays."""
    assert triton_config.instance_kind(CONFIG) == "KIND_CPU" == triton_config.DEFAULT_INSTANCE_KIND
    gpu = triton_config.with_instance_group(CONFIG, "KIND_GPU")
    assert triton_config.instance_kind(gpu) == "KIND_GPU"
    assert gpu == CONFIG.replace("instance_group [ { kind: KIND_CPU count: 1 } ]",
                                 "instance_group [ { kind: KIND_GPU count: 1 } ]")
    assert triton_config.with_instance_group(gpu, " KIND_CPU ") == CONFIG
    deployed = with_queue_delay(with_version_policy(triton_config.with_instance_group(CONFIG, "KIND_GPU"), 4), 100)
    assert (triton_config.instance_kind(deployed), pinned_version(deployed), queue_delay(deployed)) == \
        ("KIND_GPU", 4, 100)
    # Another exporter's group (several entries, gpus listed) is replaced whole, the rest kept.
    other = ('name: "m"\ninstance_group [\n  { kind: KIND_GPU count: 2 gpus: [ 0, 1 ] },\n  { kind: KIND_CPU }\n]\n'
             'x: 1\n')
    assert triton_config.with_instance_group(other, "KIND_CPU") == \
        'name: "m"\ninstance_group [ { kind: KIND_CPU count: 1 } ]\nx: 1\n'
    assert triton_config.with_instance_group('name: "m"', "KIND_GPU") == \
        'name: "m"\ninstance_group [ { kind: KIND_GPU count: 1 } ]\n'
    assert triton_config.instance_kind('name: "m"') is None


@pytest.mark.parametrize("value", ["GPU", "kind_gpu", "KIND_MODEL", "", "KIND_AUTO"])
def test_an_invalid_instance_kind_names_the_setting(value):
    with pytest.raises(ValueError, match=r"criteo_triton_instance_kind=.*expected one of KIND_CPU, KIND_GPU"):
        triton_config.with_instance_group(CONFIG, value)
