"""The pod runtime's pods, rendered with no cluster (KubernetesPodOperator's dry run), and its settings.

The same pods are sent to a real API server in tests/kubernetes."""
import pytest

from operators.pipeline.config import Settings
from operators.runtime.catalogue import STEPS
from tests.operators.runtime.conftest import PINNED

pytestmark = pytest.mark.unit



def request(step, settings, argv=("--out", "gs://criteo-bucket/pipeline/x")):
    from operators.runtime.kubernetes import pod_operator

    return pod_operator(STEPS[step], list(argv), task_id=step, settings=settings).build_pod_request_obj(dry_run=True)


@pytest.mark.parametrize("step", sorted(s for s in STEPS if STEPS[s].reads_gcs))
def test_every_step_renders_a_pinned_non_root_pod_with_its_resources(settings_env, step):
    from operators.runtime.kubernetes import PodSettings

    spec = STEPS[step]
    pod = request(step, PodSettings.of(Settings.load()))
    (c,) = pod.spec.containers
    assert c.name == "base" and c.image == PINNED[spec.image]
    assert c.command == ["python", "-m", spec.module, *spec.command]
    assert c.args == ["--out", "gs://criteo-bucket/pipeline/x"]
    assert pod.metadata.namespace == "criteo" and pod.spec.service_account_name == "criteo-steps"
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.restart_policy == "Never" and pod.spec.active_deadline_seconds == 21600
    # the images' user (uid 50000, group 0), as the real kubelet runs it (tests/kubernetes)
    sc = pod.spec.security_context
    assert sc.run_as_non_root is True and (sc.run_as_user, sc.run_as_group, sc.fs_group) == (50000, 0, 0)
    assert c.image_pull_policy is None and not pod.spec.host_network   # the production defaults
    assert c.security_context.allow_privilege_escalation is False and c.security_context.privileged is False
    assert c.security_context.capabilities.drop == ["ALL"]
    assert c.resources.requests["cpu"] == c.resources.limits["cpu"] == spec.cpu
    assert c.resources.requests["memory"] == c.resources.limits["memory"] == spec.memory
    assert pod.metadata.labels["app.kubernetes.io/component"] == step
    assert not [e for e in c.env if "KEY" in e.name or "CREDENTIALS" in e.name]  # Workload Identity: no keys
    if spec.gpu:
        assert c.resources.requests["nvidia.com/gpu"] == c.resources.limits["nvidia.com/gpu"] == "1"
        assert pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
        assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [
            ("nvidia.com/gpu", "Exists", "NoSchedule")]
        (shm,) = [v for v in pod.spec.volumes if v.name == "dshm"]
        assert shm.empty_dir.medium == "Memory" and shm.empty_dir.size_limit == "16Gi"
        assert [m.mount_path for m in c.volume_mounts] == ["/dev/shm"]
    else:
        assert "nvidia.com/gpu" not in c.resources.limits
        assert not pod.spec.node_selector and not pod.spec.tolerations and not pod.spec.volumes


def test_step_resources_override_the_catalogue_and_bad_ones_are_named(settings_env):
    from operators.runtime.kubernetes import PodConfigurationError, PodSettings

    settings_env.setenv("AIRFLOW_VAR_CRITEO_STEP_RESOURCES", '{"preprocess": {"cpu": "500m", "memory": "6Gi"}}')
    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_GPUS", "2")
    (c,) = request("preprocess", PodSettings.of(Settings.load())).spec.containers
    assert (c.resources.limits["cpu"], c.resources.limits["memory"]) == ("1000m", "12Gi")   # per GPU
    for bad, named in (('{"preproces": {}}', "unknown step 'preproces'"), ('{"train": {"memory": "6GB"}}', "6GB"),
                       ("{", "is not JSON"), ('{"train": {"gpu": 1}}', "expected")):
        settings_env.setenv("AIRFLOW_VAR_CRITEO_STEP_RESOURCES", bad)
        with pytest.raises(PodConfigurationError, match="criteo_step_resources") as err:
            PodSettings.of(Settings.load())
        assert named in str(err.value)


def test_the_local_kubelets_settings_are_refused_for_gke(settings_env):
    from operators.runtime.kubernetes import PodConfigurationError, PodSettings

    for key, value in {"POD_HOST_NETWORK": "true", "POD_IMAGE_PULL_POLICY": "Never", "GKE_CLUSTER": "c",
                       "GKE_LOCATION": "europe-west4"}.items():
        settings_env.setenv(f"AIRFLOW_VAR_CRITEO_{key}", value)
    with pytest.raises(PodConfigurationError, match="criteo_pod_host_network=true is for a node without a pod"):
        PodSettings.of(Settings.load())
    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_IMAGE_PULL_POLICY", "Sometimes")
    with pytest.raises(PodConfigurationError, match="criteo_pod_image_pull_policy='Sometimes'"):
        PodSettings.of(Settings.load())


def test_the_hugectr_trainer_gets_its_image_all_its_gpus_shm_and_the_bucket_mounted(settings_env):
    from operators.runtime.kubernetes import PodConfigurationError, PodSettings

    with pytest.raises(PodConfigurationError, match="train_hugectr reads no gs://.*criteo_pod_data=gcsfuse"):
        request("train_hugectr", PodSettings.of(Settings.load()))
    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "gcsfuse")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_GPUS", "2")
    pod = request("train_hugectr", PodSettings.of(Settings.load()),
                  ["--train", "gs://criteo-bucket/pipeline/work/processed/wf/day=3", "--epochs", "1"])
    (c,) = pod.spec.containers
    assert c.image == PINNED["hugectr"] and c.command == ["python", "-m", "criteo_merlin", "train_hugectr"]
    # HugeCTR reads files: the step's flags name the bucket through the FUSE mount
    assert c.args == ["--train", "/mnt/gcs/criteo-bucket/pipeline/work/processed/wf/day=3", "--epochs", "1"]
    assert c.resources.limits["nvidia.com/gpu"] == c.resources.requests["nvidia.com/gpu"] == "2"
    assert {m.mount_path for m in c.volume_mounts} == {"/dev/shm", "/mnt/gcs/criteo-bucket"}
    (bucket,) = [v for v in pod.spec.volumes if v.name == "bucket"]
    assert bucket.csi.driver == "gcsfuse.csi.storage.gke.io" and bucket.csi.volume_attributes["bucketName"] == \
        "criteo-bucket"
    assert pod.metadata.annotations["gke-gcsfuse/volumes"] == "true"
    assert pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}


def test_the_hugectr_image_is_needed_only_by_the_steps_that_run_in_it(settings_env):
    from operators.runtime.kubernetes import PodConfigurationError, PodSettings

    settings_env.delenv("AIRFLOW_VAR_CRITEO_IMAGE_HUGECTR")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "gcsfuse")
    settings = PodSettings.of(Settings.load())            # a PyTorch pipeline needs no HugeCTR image
    request("train", settings)
    with pytest.raises(PodConfigurationError, match="set criteo_image_hugectr"):
        request("train_hugectr", settings)
    settings_env.setenv("AIRFLOW_VAR_CRITEO_IMAGE_HUGECTR", "nvcr.io/x/criteo-hugectr:latest")
    with pytest.raises(PodConfigurationError, match="criteo_image_hugectr=.* is not pinned"):
        PodSettings.of(Settings.load())


def test_gpu_count_and_accelerator_come_from_settings(settings_env):
    from operators.runtime.kubernetes import PodSettings

    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_GPUS", "4")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GPU_ACCELERATOR", "nvidia-h100-80gb")
    pod = request("train", PodSettings.of(Settings.load()))
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "4"
    # cpu and memory of a GPU step are per GPU (one dask worker or trainer per GPU): 4 x (2, 32Gi)
    assert pod.spec.containers[0].resources.requests == {"cpu": "8", "memory": "128Gi", "nvidia.com/gpu": "4"}
    assert request("preprocess", PodSettings.of(Settings.load())).spec.containers[0].resources.limits["cpu"] == "8"
    export = request("export", PodSettings.of(Settings.load())).spec.containers[0]
    assert export.resources.limits == {"cpu": "2", "memory": "8Gi"}
    assert pod.spec.node_selector["cloud.google.com/gke-accelerator"] == "nvidia-h100-80gb"


def test_gcsfuse_mounts_the_bucket_and_rewrites_its_urls(settings_env):
    from operators.runtime.kubernetes import PodSettings

    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "gcsfuse")
    pod = request("preprocess", PodSettings.of(Settings.load()), ["--extracted", "gs://criteo-bucket/pipeline/extracted/day=3"])
    assert pod.metadata.annotations["gke-gcsfuse/volumes"] == "true"
    (vol,) = [v for v in pod.spec.volumes if v.name == "bucket"]
    assert vol.csi.driver == "gcsfuse.csi.storage.gke.io" and vol.csi.volume_attributes["bucketName"] == "criteo-bucket"
    assert "/mnt/gcs/criteo-bucket" in [m.mount_path for m in pod.spec.containers[0].volume_mounts]
    assert pod.spec.containers[0].args == ["--extracted", "/mnt/gcs/criteo-bucket/pipeline/extracted/day=3"]


def test_pvc_mounts_the_claim(settings_env):
    from operators.runtime.kubernetes import PodSettings

    settings_env.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", "/data/criteo")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "pvc")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_VOLUME_CLAIM", "criteo-data")
    pod = request("extract", PodSettings.of(Settings.load()))
    (vol,) = pod.spec.volumes
    assert vol.persistent_volume_claim.claim_name == "criteo-data"
    assert pod.spec.containers[0].volume_mounts[0].mount_path == "/data"


def test_a_named_gke_cluster_uses_gke_start_pod_operator(settings_env):
    from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator

    from operators.runtime.kubernetes import PodSettings, pod_operator

    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_CLUSTER", "criteo-gpu")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_LOCATION", "europe-west4")
    op = pod_operator(STEPS["train"], [], task_id="train", settings=PodSettings.of(Settings.load()))
    assert isinstance(op, GKEStartPodOperator)
    assert (op.cluster_name, op.location, op.namespace) == ("criteo-gpu", "europe-west4", "criteo")
    assert op.deferrable is True and op.do_xcom_push is False


@pytest.mark.parametrize("change, named", [
    ({"criteo_kubernetes_namespace": ""}, "criteo_kubernetes_namespace is not set"),
    ({"criteo_kubernetes_service_account": ""}, "criteo_kubernetes_service_account is not set"),
    ({"criteo_image_merlin": ""}, "criteo_image_merlin is not set"),
    ({"criteo_image_validator": "europe-docker.pkg.dev/p/criteo/validator:latest"}, "criteo_image_validator="),
    ({"criteo_image_monitoring": "europe-docker.pkg.dev/p/criteo/monitoring"}, "is not pinned"),
    ({"criteo_base_url": "/srv/bucket"}, "criteo_pod_data=gcsfs needs criteo_base_url on gs://"),
    ({"criteo_pod_data": "nfs"}, "criteo_pod_data='nfs'"),
    ({"criteo_pod_data": "pvc"}, "criteo_pod_volume_claim"),
    ({"criteo_gke_cluster": "c"}, "criteo_gke_cluster is set but criteo_gke_location is not"),
    ({"criteo_pod_gpus": "0"}, "criteo_pod_gpus='0'"),
    ({"criteo_pod_deferrable": "yes"}, "criteo_pod_deferrable='yes'"),
    ({"criteo_pod_gpu_schedule_timeout_s": "0"}, "criteo_pod_gpu_schedule_timeout_s='0'"),
    ({"criteo_pod_schedule_timeout_s": "soon"}, "criteo_pod_schedule_timeout_s='soon'"),
    # contradictory ways to reach the cluster
    ({"criteo_kubernetes_in_cluster": "true", "criteo_gke_cluster": "c", "criteo_gke_location": "europe-west4"},
     "criteo_kubernetes_in_cluster=true uses the service account of Airflow's own pod"),
    ({"criteo_kubernetes_in_cluster": "true", "criteo_kubernetes_conn_id": "kubernetes_prod"},
     "the connection criteo_kubernetes_conn_id='kubernetes_prod'"),
    ({"criteo_gke_use_internal_ip": "true", "criteo_gke_use_dns_endpoint": "true", "criteo_gke_cluster": "c",
      "criteo_gke_location": "europe-west4"}, "both true"),
    ({"criteo_gke_use_internal_ip": "true"}, "criteo_gke_use_internal_ip=true applies to a GKE cluster"),
    ({"criteo_gke_use_dns_endpoint": "true"}, "criteo_gke_use_dns_endpoint=true applies to a GKE cluster"),
    ({"criteo_gke_impersonation_chain": "sa@p.iam.gserviceaccount.com"}, "criteo_gke_impersonation_chain applies"),
    ({"criteo_gke_impersonation_chain": "airflow", "criteo_gke_cluster": "c", "criteo_gke_location": "l"},
     "'airflow' is not a service account"),
    ({"criteo_kubernetes_in_cluster": "maybe"}, "criteo_kubernetes_in_cluster='maybe'"),
])
def test_bad_settings_fail_naming_the_setting_without_retry(settings_env, change, named):
    from airflow.sdk.exceptions import AirflowFailException

    from operators.runtime.kubernetes import PodConfigurationError, PodSettings

    for key, value in change.items():
        settings_env.setenv(f"AIRFLOW_VAR_{key.upper()}", value)
    with pytest.raises(PodConfigurationError, match="cannot start a pod") as err:
        PodSettings.of(Settings.load())
    assert named in str(err.value)
    assert isinstance(err.value, AirflowFailException)


def test_a_digest_pins_an_image(settings_env):
    from operators.runtime.kubernetes import PodSettings

    settings_env.setenv("AIRFLOW_VAR_CRITEO_IMAGE_MERLIN", "europe-docker.pkg.dev/p/criteo/merlin@sha256:" + "a" * 64)
    assert PodSettings.of(Settings.load()).images["merlin"].endswith("a" * 64)


def test_gpu_steps_wait_longer_to_be_scheduled_and_to_start_than_cpu_steps(settings_env):
    """A GPU pool scaling up from zero: a new node (4-7 min), its driver and device plugin, then a
    cold pull of a multi-GB image; the provider's operator gets both timeouts, each its own."""
    from operators.runtime.kubernetes import PodSettings, pod_operator

    def timeouts(step):
        op = pod_operator(STEPS[step], [], task_id=step, settings=PodSettings.of(Settings.load()))
        return op.schedule_timeout_seconds, op.startup_timeout_seconds

    assert timeouts("extract") == (600, 600) and timeouts("train") == (1200, 1200)
    for key, value in {"SCHEDULE": "30", "STARTUP": "40", "GPU_SCHEDULE": "1800", "GPU_STARTUP": "900"}.items():
        settings_env.setenv(f"AIRFLOW_VAR_CRITEO_POD_{key}_TIMEOUT_S", value)
    assert timeouts("validate") == (30, 40)
    assert timeouts("preprocess") == timeouts("train") == (1800, 900)


def test_a_private_gke_cluster_is_reached_as_the_settings_say(settings_env):
    """The real GKEStartPodOperator receives the endpoint and the impersonation chain."""
    from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator

    from operators.runtime.kubernetes import PodSettings, pod_operator

    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_CLUSTER", "criteo-gpu")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_LOCATION", "europe-west4")

    def operator():
        op = pod_operator(STEPS["train"], [], task_id="train", settings=PodSettings.of(Settings.load()))
        assert isinstance(op, GKEStartPodOperator)
        return op

    op = operator()   # the defaults: the public endpoint, the connection's own identity
    assert (op.use_internal_ip, op.use_dns_endpoint, op.impersonation_chain) == (False, False, None)
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_USE_INTERNAL_IP", "true")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_IMPERSONATION_CHAIN", "criteo-airflow@p.iam.gserviceaccount.com")
    op = operator()
    assert (op.use_internal_ip, op.use_dns_endpoint) == (True, False)
    assert op.impersonation_chain == "criteo-airflow@p.iam.gserviceaccount.com"
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_USE_INTERNAL_IP", "false")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_USE_DNS_ENDPOINT", "true")
    settings_env.setenv("AIRFLOW_VAR_CRITEO_GKE_IMPERSONATION_CHAIN",
                        "hop@p.iam.gserviceaccount.com, criteo-gke@p.iam.gserviceaccount.com")
    op = operator()
    assert (op.use_internal_ip, op.use_dns_endpoint) == (False, True)
    assert op.impersonation_chain == ["hop@p.iam.gserviceaccount.com", "criteo-gke@p.iam.gserviceaccount.com"]


def test_in_cluster_reads_no_connection(settings_env):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from operators.runtime.kubernetes import PodSettings, pod_operator

    settings_env.setenv("AIRFLOW_VAR_CRITEO_KUBERNETES_IN_CLUSTER", "true")
    op = pod_operator(STEPS["extract"], [], task_id="extract", settings=PodSettings.of(Settings.load()))
    assert type(op) is KubernetesPodOperator
    assert op.in_cluster is True and op.kubernetes_conn_id is None
    # the provider's fallback: kubernetes_default, which in-cluster must leave without a kube_config
    assert op.hook.in_cluster is True and op.hook.conn_id == "kubernetes_default"


def test_only_the_hugectr_trainer_gets_sys_nice_and_no_pod_is_privileged(settings_env):
    from operators.runtime.kubernetes import PodSettings

    settings_env.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "gcsfuse")
    settings = PodSettings.of(Settings.load())
    for step in STEPS:
        (c,) = request(step, settings).spec.containers
        caps = c.security_context.capabilities
        assert caps.drop == ["ALL"] and c.security_context.privileged is False
        assert c.security_context.allow_privilege_escalation is False
        assert caps.add == (["SYS_NICE"] if step == "train_hugectr" else None), step
