"""A read-only OCI registry on loopback (Docker Registry HTTP API v2: `GET /v2/`, `HEAD/GET` of
manifests and blobs) whose blobs go out at a set bandwidth: a slow image pull by a node's real
containerd, which otherwise never pulls (local_servers.kubelet imports the images).

containerd 1.6's CRI plugin reaches a registry on a loopback address over plain HTTP without any
configuration (pkg/cri/server/image_pull.go, v1.6.20: `defaultScheme` returns "http" when
`docker.IsLocalhost(host)`, and IsLocalhost is true for `ip.IsLoopback()`), so an image reference
`127.0.0.1:PORT/name:tag` is pulled from here as it is.

The images served are a node's own (its containerd's content store) with one layer added: random
bytes, new on every `add_image`. A node unpacks only the layers it has no snapshot of (containerd's
unpacker.go stats each layer's chainID first), so without it no byte of an imported image would be
fetched; with it the new layer's bytes really come through the throttle, the rest is the node's
warm cache, as a node that pulled the image's base before.

    with Registry(bandwidth=2_000_000) as registry:
        ref = registry.add_image(node, "localhost/criteo-merlin:local", "criteo/merlin", "slow-1", 40_000_000)
        ...  # a pod with image `ref` pulls ~40 MB at 2 MB/s
        registry.transfers   # what went out: digest, bytes, seconds
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json")
CHUNK = 64 * 1024


@dataclass
class Transfer:
    digest: str
    size: int
    started: float
    finished: float | None = None
    sent: int = 0

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    """`with Registry(bandwidth=bytes_per_s):` serving on 127.0.0.1:`port` until the block ends."""

    bandwidth: float
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)   # (name, tag): type, body
    blobs: dict[str, bytes | Path] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)

    def __post_init__(self):
        self._stopped = threading.Event()
        self._cut: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self.port: int | None = None
        self.added_layers: dict[str, str] = {}   # reference -> the digest of the layer add_image made

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # content ---------------------------------------------------------------------------------

    def add_image(self, node, ref: str, name: str, tag: str, extra_bytes: int) -> str:
        """`ref` from `node`'s containerd, with a new layer of `extra_bytes` random bytes, served as
        name:tag; returns the reference a pod uses."""
        content = node.cache / "root" / "io.containerd.content.v1.content" / "blobs" / "sha256"
        listed = subprocess.run([*node.ctr, "images", "ls"], capture_output=True, text=True, check=True).stdout
        row = next((line.split() for line in listed.splitlines()[1:] if line.split()[:1] == [ref]), None)
        if row is None:
            raise LookupError(f"image {ref} is not in node {node.spec.name}'s containerd: run `make node-images`")
        media_type, digest = row[1], row[2]
        if media_type not in MANIFEST_TYPES:
            raise ValueError(f"image {ref} on node {node.spec.name} is a {media_type}, not one manifest")
        manifest = json.loads((content / digest.split(":")[1]).read_bytes())
        config = json.loads((content / manifest["config"]["digest"].split(":")[1]).read_bytes())
        for layer in manifest["layers"]:
            self.blobs[layer["digest"]] = content / layer["digest"].split(":")[1]

        layer = _random_layer(extra_bytes)
        layer_digest = _digest(layer)
        self.blobs[layer_digest] = layer
        config["rootfs"]["diff_ids"].append(layer_digest)   # uncompressed: the digest is the diff ID
        config.setdefault("history", []).append({"created_by": "local_servers.registry: random bytes, a new layer"})
        config_bytes = json.dumps(config).encode()
        self.blobs[_digest(config_bytes)] = config_bytes
        docker = media_type.startswith("application/vnd.docker")
        manifest["config"] = {**manifest["config"], "digest": _digest(config_bytes), "size": len(config_bytes)}
        manifest["layers"].append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar" if docker
                                   else "application/vnd.oci.image.layer.v1.tar",
                                   "digest": layer_digest, "size": len(layer)})
        manifest_bytes = json.dumps(manifest).encode()
        self.manifests[(name, tag)] = (media_type, manifest_bytes)
        reference = f"{self.host}/{name}:{tag}"
        self.added_layers[reference] = layer_digest
        return reference

    def transfer_of(self, digest: str) -> Transfer | None:
        done = [t for t in self.transfers if t.digest == digest]
        return done[-1] if done else None

    # server ----------------------------------------------------------------------------------

    def start(self) -> Registry:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="registry", daemon=True).start()
        return self

    def cut(self, reference: str) -> None:
        """Stop sending the layer add_image made for `reference`, as a connection dropped: that pull
        fails and the node's kubelet (which pulls one image at a time) is free again."""
        self._cut.add(self.added_layers[reference])

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _random_layer(size: int) -> bytes:
    """An uncompressed layer tar: one file of `size` random bytes (incompressible, never on a node)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("criteo-pull-padding")
        info.size, info.mode, info.mtime = size, 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return out.getvalue()


PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")


def _handler(registry: Registry):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):   # the test reads `transfers`, not a log on stderr
            pass

        def _error(self, status: int, code: str) -> None:
            body = json.dumps({"errors": [{"code": code, "message": code.lower().replace("_", " ")}]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            if self.path.rstrip("/") == "/v2":
                self.send_response(200)
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(b"{}")
                return
            match = PATH.match(self.path.split("?")[0])
            if not match:
                return self._error(404, "NAME_UNKNOWN")
            name, kind, ref = match["name"], match["kind"], match["ref"]
            if kind == "manifests":
                found = registry.manifests.get((name, ref)) or next(   # by digest, as containerd fetches it
                    (m for (n, _), m in registry.manifests.items() if n == name and _digest(m[1]) == ref), None)
                if found is None:
                    return self._error(404, "MANIFEST_UNKNOWN")
                media_type, body = found
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Docker-Content-Digest", _digest(body))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)
                return
            blob = registry.blobs.get(ref)
            if blob is None:
                return self._error(404, "BLOB_UNKNOWN")
            size = len(blob) if isinstance(blob, bytes) else blob.stat().st_size
            start = 0
            wanted = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if wanted:   # containerd resumes an interrupted fetch from its ingest's offset
                start = min(int(wanted[1]), size)
            self.send_response(206 if wanted else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Docker-Content-Digest", ref)
            self.send_header("Content-Length", str(size - start))
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            if self.command == "GET":
                self._send_throttled(ref, blob, start, size)

        def _send_throttled(self, digest: str, blob: bytes | Path, start: int, size: int) -> None:
            transfer = Transfer(digest, size - start, time.monotonic())
            registry.transfers.append(transfer)
            source = io.BytesIO(blob) if isinstance(blob, bytes) else open(blob, "rb")   # noqa: SIM115
            with source:
                source.seek(start)
                while chunk := source.read(CHUNK):
                    if registry._stopped.is_set() or digest in registry._cut:
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    transfer.sent += len(chunk)
                    # ahead of the bandwidth: wait until the bytes sent are due
                    ahead = transfer.started + transfer.sent / registry.bandwidth - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            transfer.finished = time.monotonic()

    return Handler


__all__ = ["Registry", "Transfer"]
