"""A hook onto one Triton Inference Server, over gRPC (tritonclient).

The server runs with explicit model control: a model (re)loads only when asked, and reads its
`config.pbtxt` again each time, so the version it serves is the one the repository's
`version_policy` names (see operators/hooks/model_repository.py). This hook asks for loads and
unloads, reads which versions are ready, and sends inference requests in the model's signature
(criteo_kernel.signature).

Errors come in two kinds, because callers treat them differently:

- `TritonUnavailable`: the server cannot be reached or is not ready (down, restarting, wrong
  address). Nothing changed on it; retrying later can help.
- `TritonModelError`: the server answered and refused (a load that failed, an unknown model, a
  failed inference); the message is Triton's own.

tritonclient is imported inside the methods: DAG files import operators/* at parse time.

The address comes from the caller (the setting criteo_triton_grpc_url); every replica's, for
deploy: `replica_urls` (the setting criteo_triton_replicas).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from criteo_kernel.signature import CATEGORICAL_INPUT, DENSE_INPUT, MAX_BATCH_SIZE, OUTPUT

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
# gRPC status codes that mean "could not talk to the server" rather than "the server said no".
_UNREACHABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


class TritonUnavailable(RuntimeError):
    """Triton cannot be reached, or is not ready; nothing was changed on it."""


class TritonModelError(RuntimeError):
    """Triton answered but refused: failed load, unknown model, failed inference (Triton's message)."""


def replica_urls(spec: str, default_url: str, resolve=None) -> list[str]:
    """Every replica's gRPC address: "host:port" entries of `spec`, comma-separated (the setting
    `criteo_triton_replicas`); empty: `default_url` alone (`criteo_triton_grpc_url`), not resolved.
    Each host stands for every address it resolves to, so a Kubernetes headless Service's name
    gives one address per pod.

    A name that resolves to nothing raises TritonUnavailable (DNS may answer on a retry).
    """
    import socket

    resolve = resolve or socket.getaddrinfo
    if not spec.strip():
        return [default_url.strip()]
    urls: list[str] = []
    for entry in (e.strip() for e in spec.split(",")):
        for scheme in ("grpc://", "http://"):
            entry = entry.removeprefix(scheme)
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"criteo_triton_replicas: {entry!r} is not host:port")
        host = host.strip("[]")
        try:
            infos = resolve(host, int(port), type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TritonUnavailable(f"Triton replicas {entry}: {host} does not resolve ({exc})") from exc
        for family, *_, sockaddr in infos:
            ip = sockaddr[0]
            url = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
            if url not in urls:
                urls.append(url)
    if not urls:
        raise TritonUnavailable(f"Triton replicas {spec}: no address")
    return urls


class TritonHook:
    """Talks to one Triton server at `url` (gRPC "host:port").

    :param url: the server's gRPC address, e.g. "127.0.0.1:8001" (the caller's setting
        `criteo_triton_grpc_url`).
    :param timeout_s: deadline of each call (readiness, index, inference).
    :param load_timeout_s: deadline of a model load (loading a version can take a while: on gs://
        Triton downloads the version first).
    """

    def __init__(self, url: str, timeout_s: float = 30.0, load_timeout_s: float = 600.0):
        url = url.strip()
        for scheme in ("grpc://", "http://"):
            if url.startswith(scheme):
                url = url[len(scheme):]
        self.url = url
        self.timeout_s = float(timeout_s)
        self.load_timeout_s = max(float(load_timeout_s), self.timeout_s)
        self._client = None

    # -- connection -------------------------------------------------------------------------
    def get_conn(self):
        """The tritonclient.grpc.InferenceServerClient (created once)."""
        if self._client is None:
            import tritonclient.grpc as grpcclient

            # Fail fast on a dead address instead of waiting out the whole deadline reconnecting.
            self._client = grpcclient.InferenceServerClient(
                self.url, channel_args=[("grpc.initial_reconnect_backoff_ms", 200),
                                        ("grpc.max_reconnect_backoff_ms", 1000),
                                        ("grpc.max_send_message_length", 64 * 1024 * 1024),
                                        ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def __enter__(self) -> TritonHook:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unreachable(self, exc: Exception, what: str) -> TritonUnavailable:
        return TritonUnavailable(f"Triton at {self.url} is unreachable ({what}): {_message(exc)}")

    @staticmethod
    def _is_unreachable(exc: Exception) -> bool:
        status = str(getattr(exc, "status", lambda: None)() or "")
        return any(code in status for code in _UNREACHABLE)

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one client call; connection failures become TritonUnavailable, refusals TritonModelError."""
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            # Triton answers "unknown model / version not ready" with gRPC UNAVAILABLE too: that is
            # a refusal from a live server, not a connection failure, so ask whether it is live.
            status = str(exc.status() or "")
            if "DEADLINE_EXCEEDED" in status:  # no answer in time (a load may still finish later)
                raise TritonUnavailable(f"Triton at {self.url} did not answer {what} within its deadline: "
                                        f"{_message(exc)}") from None
            if self._is_unreachable(exc) and not self._is_live():
                raise self._unreachable(exc, what) from None
            raise TritonModelError(f"Triton at {self.url} refused {what}: {_message(exc)}") from None
        except (OSError, ValueError) as exc:  # bad address, socket errors
            raise self._unreachable(exc, what) from None

    def _is_live(self) -> bool:
        try:
            return bool(self.get_conn().is_server_live(client_timeout=min(self.timeout_s, 5.0)))
        except Exception:  # noqa: BLE001
            return False

    # -- server -----------------------------------------------------------------------------
    def is_ready(self) -> bool:
        """True when the server answers and says it is ready; False (never an exception) otherwise."""
        try:
            return bool(self.get_conn().is_server_ready(client_timeout=self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - unreachable, bad address, deadline: all "not ready"
            log.debug("Triton at %s not ready: %s", self.url, exc)
            return False

    def ensure_ready(self) -> None:
        """Raise TritonUnavailable (naming the URL and the cause) unless the server is ready."""
        try:
            ready = self.get_conn().is_server_ready(client_timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001
            raise self._unreachable(exc, "server readiness") from None
        if not ready:
            raise TritonUnavailable(f"Triton at {self.url} answers but is not ready (GET /v2/health/ready is false)")

    # -- models -----------------------------------------------------------------------------
    def load_model(self, model: str) -> None:
        """(Re)load `model` from the repository: Triton re-reads <model>/config.pbtxt and loads the
        versions its version_policy names, then drops the versions it no longer names.

        If the load fails, Triton keeps serving what it served before; TritonModelError carries
        Triton's message.
        """
        self.ensure_ready()
        t0 = time.monotonic()
        self._call(f"loading model '{model}'", self.get_conn().load_model, model, client_timeout=self.load_timeout_s)
        # The load returns once the new versions are READY; versions the policy dropped unload in
        # the background. Wait for that too, so that on return Triton serves exactly the policy's.
        self._wait_settled(model, self.timeout_s)
        log.info("Triton at %s loaded %s in %.1fs; ready versions %s", self.url, model, time.monotonic() - t0,
                 self.ready_versions(model))

    def _wait_settled(self, model: str, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            states = self.model_states(model)
            if not any(state in ("LOADING", "UNLOADING") for state, _ in states.values()):
                return
            time.sleep(0.1)
        log.warning("%s on Triton at %s still loading/unloading after %.0fs: %s", model, self.url, wait_s,
                    self.model_states(model))

    def unload_model(self, model: str, wait_s: float | None = None) -> None:
        """Unload every version of `model`; returns once none is ready (or after `wait_s`)."""
        self._call(f"unloading model '{model}'", self.get_conn().unload_model, model, client_timeout=self.timeout_s)
        self._wait_settled(model, self.timeout_s if wait_s is None else wait_s)

    def repository_index(self) -> list[dict]:
        """Triton's model repository index: [{"name", "version", "state", "reason"}, ...]."""
        index = self._call("the repository index", self.get_conn().get_model_repository_index, as_json=True,
                           client_timeout=self.timeout_s)
        return list(index.get("models", []))

    def ready_versions(self, model: str) -> list[int]:
        """The versions of `model` Triton serves now (state READY), ascending."""
        return sorted({int(m["version"]) for m in self.repository_index()
                       if m.get("name") == model and m.get("state") == "READY" and str(m.get("version", "")).isdigit()})

    def model_states(self, model: str) -> dict[int, tuple[str, str]]:
        """{version: (state, reason)} for `model` as Triton's index reports it (failed loads included)."""
        return {int(m["version"]): (m.get("state", ""), m.get("reason", "")) for m in self.repository_index()
                if m.get("name") == model and str(m.get("version", "")).isdigit()}

    # -- inference --------------------------------------------------------------------------
    def infer(self, model: str, dense_raw: np.ndarray, cat_hash: np.ndarray,
              version: int | None = None) -> tuple[np.ndarray, int]:
        """Predict click probabilities for raw rows: dense_raw [B,13] float32 (NaN = missing),
        cat_hash [B,26] int64 (-1 = missing). Returns (ctr [B] float32, the version that answered).

        Batches above the model's max_batch_size go as several requests; they must all be answered
        by the same version (else TritonModelError: the served version changed midway).
        """
        import numpy as np
        import tritonclient.grpc as grpcclient

        dense = np.ascontiguousarray(dense_raw, dtype=np.float32)
        cats = np.ascontiguousarray(cat_hash, dtype=np.int64)
        if dense.ndim != 2 or cats.ndim != 2 or len(dense) != len(cats):
            raise ValueError(f"expected dense_raw [B,13] and cat_hash [B,26], got {dense.shape} and {cats.shape}")
        if len(dense) == 0:
            raise ValueError("infer needs at least one row")
        preds, versions = [], set()
        for start in range(0, len(dense), MAX_BATCH_SIZE):
            d, c = dense[start:start + MAX_BATCH_SIZE], cats[start:start + MAX_BATCH_SIZE]
            inputs = [grpcclient.InferInput(DENSE_INPUT, list(d.shape), "FP32"),
                      grpcclient.InferInput(CATEGORICAL_INPUT, list(c.shape), "INT64")]
            inputs[0].set_data_from_numpy(d)
            inputs[1].set_data_from_numpy(c)
            result = self._call(f"inference on '{model}'" + (f" version {version}" if version is not None else ""),
                                self.get_conn().infer, model, inputs,
                                model_version="" if version is None else str(int(version)),
                                outputs=[grpcclient.InferRequestedOutput(OUTPUT)], client_timeout=self.timeout_s)
            preds.append(result.as_numpy(OUTPUT).reshape(-1).astype(np.float32, copy=False))
            versions.add(int(result.get_response().model_version))
        if len(versions) != 1:
            raise TritonModelError(f"{model} answered from versions {sorted(versions)} within one call: "
                                   "the served version changed midway")
        return np.concatenate(preds), versions.pop()


def _message(exc: Exception) -> str:
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return (text or repr(exc)).strip()
