"""The pod runtime against a real Kubernetes API server (local_servers.kube): the pods every step
asks for are accepted, the real scheduler places them, and steps run as pods end as they do
locally: their result comes back, a failure fails the task, bad data fails it without retry."""
import time

import pytest

from local_servers.kube_fixtures import IMAGES, NAMESPACE, RESOURCES, SERVICE_ACCOUNT
from operators.runtime.catalogue import STEPS

pytestmark = pytest.mark.kubernetes


def pod_request(kube, step, argv=("--help",)):
    from operators.pipeline.config import Settings
    from operators.runtime.kubernetes import PodSettings, pod_operator

    op = pod_operator(STEPS[step], list(argv), task_id=step, settings=PodSettings.of(Settings.load()))
    return kube.api_client.sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def wait_for(what, check, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_step_pod_is_accepted_by_the_api_server(kube, pod_settings, step):
    spec = STEPS[step]
    created = kube.core.create_namespaced_pod(NAMESPACE, pod_request(kube, step), dry_run="All")
    (c,) = created.spec.containers
    assert created.metadata.namespace == NAMESPACE and created.spec.service_account_name == SERVICE_ACCOUNT
    assert c.image == IMAGES[spec.image] and c.command[:3] == ["python", "-m", spec.module]
    assert c.resources.requests["memory"] == c.resources.limits["memory"] == RESOURCES.get(step, {}).get(
        "memory", spec.memory)
    pod_security = created.spec.security_context
    assert pod_security.run_as_non_root and not c.security_context.allow_privilege_escalation
    assert (pod_security.run_as_user, pod_security.run_as_group, pod_security.fs_group) == (50000, 0, 0)
    assert c.security_context.capabilities.drop == ["ALL"]
    assert c.image_pull_policy == "Never" and created.spec.host_network
    host = {v.name: v.host_path.path for v in created.spec.volumes if v.host_path}
    assert host == {"data": str(pod_settings)} and {m.mount_path for m in c.volume_mounts} >= {str(pod_settings)}
    # the server's admission added what it adds to every pod: the GPU taint is tolerated, not ignored
    if spec.gpu:
        assert c.resources.limits["nvidia.com/gpu"] == "1"
        assert created.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
        assert ("nvidia.com/gpu", "Exists", "NoSchedule") in [(t.key, t.operator, t.effect)
                                                              for t in created.spec.tolerations]
        assert [(v.name, v.empty_dir.medium) for v in created.spec.volumes if v.empty_dir] == [("dshm", "Memory")]
    else:
        assert "nvidia.com/gpu" not in c.resources.limits and not created.spec.node_selector


def test_the_hugectr_trainers_pod_with_the_bucket_mounted_is_accepted(kube, pod_settings, monkeypatch):
    """HugeCTR reads files: on GKE its pod mounts the bucket (the GCS FUSE CSI volume, inline)."""
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", "gs://criteo-bucket/pipeline")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "gcsfuse")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_GPUS", "2")
    body = pod_request(kube, "train_hugectr", ["--train", "gs://criteo-bucket/pipeline/work/processed/w/day=1"])
    created = kube.core.create_namespaced_pod(NAMESPACE, body, dry_run="All")
    (c,) = created.spec.containers
    assert c.image == IMAGES["hugectr"] and c.command == ["python", "-m", "criteo_merlin", "train_hugectr"]
    assert c.args == ["--train", "/mnt/gcs/criteo-bucket/pipeline/work/processed/w/day=1"]
    assert c.resources.limits["nvidia.com/gpu"] == "2"
    assert {v.name: (v.csi.driver if v.csi else v.empty_dir.medium) for v in created.spec.volumes} == {
        "dshm": "Memory", "bucket": "gcsfuse.csi.storage.gke.io"}
    assert created.metadata.annotations["gke-gcsfuse/volumes"] == "true"


def test_the_server_refuses_a_pod_it_should(kube, pod_settings):
    from kubernetes.client.rest import ApiException

    body = pod_request(kube, "train")
    body["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "2"  # request != limit
    with pytest.raises(ApiException) as err:
        kube.core.create_namespaced_pod(NAMESPACE, body, dry_run="All")
    assert err.value.status == 422 and "nvidia.com/gpu" in err.value.body
    body = pod_request(kube, "train")
    body["spec"]["serviceAccountName"] = "no-such-account"
    with pytest.raises(ApiException) as err:
        kube.core.create_namespaced_pod(NAMESPACE, body, dry_run="All")
    assert err.value.status == 403 and "no-such-account" in err.value.body


def node_of(kube, name):
    pod = kube.core.read_namespaced_pod(name, NAMESPACE)
    return pod.spec.node_name


def unschedulable(kube, name):
    pod = kube.core.read_namespaced_pod(name, NAMESPACE)
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return cond.message
    return None


def test_the_real_scheduler_puts_gpu_steps_on_the_gpu_node_only(kube, pod_settings, monkeypatch):
    gpu = kube.core.create_namespaced_pod(NAMESPACE, pod_request(kube, "train"))
    cpu = kube.core.create_namespaced_pod(NAMESPACE, pod_request(kube, "extract"))
    assert wait_for("the GPU pod to be bound", lambda: node_of(kube, gpu.metadata.name)) == "criteo-gpu-0"
    # the CPU step does not tolerate the GPU node's taint
    assert wait_for("the CPU pod to be bound", lambda: node_of(kube, cpu.metadata.name)) == "criteo-cpu-0"

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_GPUS", "4")  # the node has 2
    greedy = kube.core.create_namespaced_pod(NAMESPACE, pod_request(kube, "train"))
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_GPUS", "1")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_GPU_ACCELERATOR", "nvidia-h100-80gb")  # no such node
    elsewhere = kube.core.create_namespaced_pod(NAMESPACE, pod_request(kube, "preprocess"))
    assert "Insufficient nvidia.com/gpu" in wait_for("the scheduler to give up", lambda: unschedulable(
        kube, greedy.metadata.name))
    assert "didn't match Pod's node affinity" in wait_for("the scheduler to give up", lambda: unschedulable(
        kube, elsewhere.metadata.name))
    time.sleep(2)
    for name in (greedy.metadata.name, elsewhere.metadata.name):
        pod = kube.core.read_namespaced_pod(name, NAMESPACE)
        assert pod.status.phase == "Pending" and pod.spec.node_name is None


def run_dag(bag, dag_id, conf=None):
    dr = bag.get_dag(dag_id).test(run_conf=conf)
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def test_a_step_pod_returns_its_result_and_is_deleted(kube, pod_settings, pod_dagbag):
    dr, tis = run_dag(pod_dagbag, "pod_step_synth", {"rows": 300})
    assert dr.state == "success", {k: ti.state for k, ti in tis.items()}
    result = tis["synth"].xcom_pull(task_ids="synth")
    assert result["days"] == [{"day": 0, "path": str(pod_settings / "raw" / "day_0"), "rows": 300,
                               "ctr": result["days"][0]["ctr"]}]
    assert (pod_settings / "raw" / "day_0").read_text().count("\n") == 300
    pod_name = tis["synth"].xcom_pull(task_ids="synth", key="pod_name")
    assert pod_name.startswith("criteo-synth-")
    wait_for("the succeeded pod to be deleted", lambda: not [p for p in kube.pods() if p.metadata.name == pod_name])


def test_bad_data_fails_at_once_without_retry(kube, pod_settings, pod_dagbag):
    raw = pod_settings / "raw"
    raw.mkdir(parents=True)
    good = "\t".join(["1"] + ["3"] * 13 + ["deadbeef"] * 26)
    bad = "\t".join(["2"] + ["x"] + ["3"] * 12 + ["DEADBEEF"] * 26)
    (raw / "day_0").write_text("\n".join([good] * 1500 + [bad] * 20) + "\n")
    dr, tis = run_dag(pod_dagbag, "pod_step_bad_data")
    assert tis["extract"].state == "success"
    validate = tis["validate"]
    assert validate.state == "failed" and validate.try_number == 1 and validate.max_tries >= 3
    report = validate.xcom_pull(task_ids="validate", key="step_result")
    assert report["success"] is False and "label" in report["summary"]


def test_a_missing_pod_setting_fails_the_first_task_before_any_pod(kube, pod_settings, dagbag, monkeypatch):
    from datetime import UTC, datetime

    from airflow.sdk.exceptions import AirflowFailException

    from operators.tasks.defaults import decide_settings

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_IMAGE_VALIDATOR", "")
    with pytest.raises(AirflowFailException, match="criteo_image_validator is not set"):
        decide_settings()   # what the plan task runs first
    dr = dagbag.get_dag("criteo_incremental_training").test(logical_date=datetime(2026, 1, 3, tzinfo=UTC))
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    plan = tis["plan_incremental_run"]
    assert dr.state == "failed" and plan.state == "failed" and plan.try_number == 1 and plan.max_tries > 0
    assert tis["extract"].state == "upstream_failed"
    assert not kube.pods()


def test_pods_read_and_write_gs_themselves(kube, pod_settings, pod_dagbag, gcs, monkeypatch):
    """criteo_pod_data=gcsfs, the production default: the pods reach the bucket (here the GCS
    emulator, its address given to every pod by criteo_pod_env) through fsspec/gcsfs."""
    import json

    import fsspec

    gcs.create_bucket("criteo-pods")
    base = "gs://criteo-pods/pipeline"
    for key, value in gcs.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", base)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "gcsfs")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_ENV", ",".join(f"{k}={v}" for k, v in gcs.env().items()))
    good = "\t".join(["1"] + ["3"] * 13 + ["deadbeef"] * 26)
    bad = "\t".join(["2"] + ["x"] + ["3"] * 12 + ["DEADBEEF"] * 26)
    fs = fsspec.filesystem("gs")
    fs.pipe_file(f"{base}/raw/day_0", ("\n".join([good] * 1500 + [bad] * 20) + "\n").encode())
    dr, tis = run_dag(pod_dagbag, "pod_step_bad_data")
    assert tis["extract"].state == "success"                       # read gs:// raw, published gs:// partition
    assert fs.exists(f"{base}/extracted/day=0/_COMMITTED")
    validate = tis["validate"]                                      # read it back from gs://, found bad data
    assert validate.state == "failed" and validate.try_number == 1
    assert validate.xcom_pull(task_ids="validate", key="step_result")["success"] is False
    (summary,) = fs.glob(f"{base}/data_docs/**/_summary.json")     # its data docs, published to the bucket
    assert json.loads(fs.cat_file(summary))["success"] is False
    assert not any(pod_settings.iterdir())                         # nothing on local disk


def test_steps_on_a_persistent_volume_write_files_the_next_step_reads(kube, pod_settings, pod_dagbag, monkeypatch,
                                                                      tmp_path):
    """criteo_pod_data=pvc: a local PersistentVolume (a node folder) bound to the ReadWriteMany claim the
    pods mount. extract writes its partition as the images' user; validate, the next pod, reads it."""
    from kubernetes import client

    from local_servers.kube_fixtures import bucket_folder
    from operators.runtime.local import LocalProcessRuntime

    root = bucket_folder(tmp_path / "volume")
    name = f"criteo-data-{tmp_path.name[-8:].lower().replace('_', '-')}"
    kube.core.create_persistent_volume(client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"}, access_modes=["ReadWriteMany"], storage_class_name="local",
            persistent_volume_reclaim_policy="Retain", local=client.V1LocalVolumeSource(path=str(root)),
            node_affinity=client.V1VolumeNodeAffinity(required=client.V1NodeSelector(node_selector_terms=[
                client.V1NodeSelectorTerm(match_expressions=[client.V1NodeSelectorRequirement(
                    key="kubernetes.io/hostname", operator="In", values=sorted(kube.nodes))])])))))
    kube.core.create_namespaced_persistent_volume_claim(NAMESPACE, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeClaimSpec(access_modes=["ReadWriteMany"], storage_class_name="local",
                                                volume_name=name, resources={"requests": {"storage": "1Gi"}})))
    bucket = root / "bucket"
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(bucket / "raw"), "--days", "0", "--rows", "3000"])
    for key, value in {"BASE_URL": str(bucket), "POD_DATA": "pvc", "POD_VOLUME_CLAIM": name,
                       "POD_MOUNT_PATH": str(root)}.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_CRITEO_{key}", value)
    try:
        dr, tis = run_dag(pod_dagbag, "pod_step_bad_data")
        assert dr.state == "success", {k: ti.state for k, ti in tis.items()}
        written = [p for p in (bucket / "extracted").rglob("*") if p.is_file()]
        assert written and {(p.stat().st_uid, p.stat().st_gid) for p in written} == {(50000, 0)}
        assert tis["validate"].xcom_pull(task_ids="validate")["success"] is True   # it read extract's files
    finally:
        kube.delete_all_pods()
        kube.core.delete_namespaced_persistent_volume_claim(name, NAMESPACE)
        kube.core.delete_persistent_volume(name)


def test_the_plan_refuses_a_claim_that_is_not_read_write_many(kube, pod_settings, monkeypatch):
    """The run's first task reads the claim through the run's connection: a ReadWriteOnce claim
    (one node at a time) is refused naming criteo_pod_volume_claim, a ReadWriteMany one accepted."""
    from kubernetes import client

    from operators.pipeline.config import Settings
    from operators.runtime import problems

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DATA", "pvc")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_MOUNT_PATH", str(pod_settings.parent))
    names = {"ReadWriteOnce": "criteo-rwo", "ReadWriteMany": "criteo-rwx"}
    for mode, name in names.items():
        kube.core.create_namespaced_persistent_volume_claim(NAMESPACE, client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(access_modes=[mode], storage_class_name="none",
                                                    resources={"requests": {"storage": "1Gi"}})))
    try:
        monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_VOLUME_CLAIM", "criteo-rwo")
        assert problems(Settings.load()) == [
            "criteo_pod_volume_claim='criteo-rwo' is ReadWriteOnce: the step pods run on several nodes (GPU and CPU "
            "pools) and need a ReadWriteMany claim (e.g. Filestore)"]
        monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_VOLUME_CLAIM", "criteo-rwx")
        assert problems(Settings.load()) == []
        monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_VOLUME_CLAIM", "criteo-none")
        assert problems(Settings.load()) == [
            "criteo_pod_volume_claim='criteo-none': no such PersistentVolumeClaim in namespace 'criteo'"]
    finally:
        for name in names.values():
            kube.core.delete_namespaced_persistent_volume_claim(name, NAMESPACE)


def test_the_hugectr_trainers_container_gets_sys_nice_and_nothing_else(kube, pod_settings):
    """The trainer's security context on a real kubelet (containerd 1.6, runc): SYS_NICE is the one
    capability in the container's bounding set. Its user is not root (uid 50000), and exec gives a
    non-root process nothing from the bounding set: /proc/self/status shows what it really holds."""
    body = pod_request(kube, "train_hugectr", ["--help"])
    container = body["spec"]["containers"][0]
    # the stand-in HugeCTR image is not on the nodes: the merlin image, with the trainer's security context
    container["image"] = IMAGES["merlin"]
    container["command"], container["args"] = ["sh", "-c", "grep ^Cap /proc/self/status"], []
    # its catalogue memory (32Gi per GPU) does not fit these nodes
    container["resources"]["requests"]["memory"] = container["resources"]["limits"]["memory"] = "1Gi"
    created = kube.core.create_namespaced_pod(NAMESPACE, body)
    name = created.metadata.name
    wait_for("the pod to finish", lambda: kube.core.read_namespaced_pod(name, NAMESPACE).status.phase in (
        "Succeeded", "Failed"), timeout_s=60)
    log = kube.core.read_namespaced_pod_log(name, NAMESPACE, _preload_content=False).data.decode()
    caps = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in log.splitlines()) if v}
    assert {"CapBnd", "CapEff"} <= set(caps), log
    sys_nice = 1 << 23   # CAP_SYS_NICE, linux/capability.h
    assert int(caps["CapBnd"], 16) == sys_nice, caps
    # measured: as uid 50000 the process holds none of it (no ambient capabilities from the CRI);
    # docs/kubernetes-gke.md says what that means for HugeCTR
    assert int(caps["CapEff"], 16) == int(caps["CapPrm"], 16) == 0, caps
