"""local_servers/registry.py over real HTTP on loopback, without a node: the API v2 answers
containerd's resolver and fetcher read (what a pull by a node does: tests/kubernetes/test_pod_launch.py),
and the throttle holds."""
import hashlib
import json
import time
import urllib.error
import urllib.request

import pytest

from local_servers.registry import Registry, _random_layer

pytestmark = pytest.mark.unit

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def get(url, method="GET", **headers):
    return urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=30)


def test_the_api_v2_a_pull_reads_and_the_bandwidth_it_keeps():
    layer = _random_layer(400_000)
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "layers": [{"digest": digest}]}).encode()
    with Registry(bandwidth=1_000_000) as registry:
        registry.blobs[digest] = layer
        registry.manifests[("criteo/merlin", "slow")] = (MANIFEST, manifest)
        base = f"http://{registry.host}/v2"
        ping = get(base + "/")
        assert ping.status == 200 and ping.headers["Docker-Distribution-API-Version"] == "registry/2.0"

        head = get(f"{base}/criteo/merlin/manifests/slow", "HEAD")   # containerd resolves with HEAD first
        assert head.headers["Content-Type"] == MANIFEST and int(head.headers["Content-Length"]) == len(manifest)
        assert head.read() == b""
        by_digest = head.headers["Docker-Content-Digest"]
        assert get(f"{base}/criteo/merlin/manifests/{by_digest}").read() == manifest

        started = time.monotonic()
        assert get(f"{base}/criteo/merlin/blobs/{digest}").read() == layer
        took = time.monotonic() - started
        assert took >= 0.3, took   # ~0.4 s at 1 MB/s; unthrottled it is milliseconds (no upper bound: a busy machine)
        # the server thread counts a chunk after its write returns, so the client may hold every
        # byte a moment before the last count lands
        deadline = time.monotonic() + 10
        while registry.transfer_of(digest).finished is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert registry.transfer_of(digest).sent == len(layer)

        resumed = get(f"{base}/criteo/merlin/blobs/{digest}", Range="bytes=100000-")
        assert resumed.status == 206 and resumed.read() == layer[100000:]
        assert resumed.headers["Content-Range"] == f"bytes 100000-{len(layer) - 1}/{len(layer)}"

        for missing, code in ((f"blobs/sha256:{'0' * 64}", "BLOB_UNKNOWN"), ("manifests/other", "MANIFEST_UNKNOWN")):
            with pytest.raises(urllib.error.HTTPError) as err:
                get(f"{base}/criteo/merlin/{missing}")
            assert err.value.code == 404 and json.loads(err.value.read())["errors"][0]["code"] == code
