"""The inference client's requests to Triton over gRPC: one channel per thread, retries with backoff.

The model's signature (criteo_kernel.signature): raw features in (`dense_raw`, `cat_hash`), the
click probability out (`ctr`); Triton's response names the version that answered.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from criteo_kernel.signature import CATEGORICAL_INPUT, DENSE_INPUT, OUTPUT

from .errors import ReplayError

# gRPC codes that mean "try again": the server is down or restarting, or does not serve the model
# right now. Triton answers a request for a model that is not ready with UNAVAILABLE, and one for a
# model it has no loaded version of with NOT_FOUND: while it shuts down (on SIGTERM it unloads the
# models while its endpoints still answer: "... has no available versions") and after a restart
# until production is loaded again ("Request for unknown model"). A model that never comes fails
# after the retries, like a server that never answers.
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "NOT_FOUND")


class TritonClient:
    """Inference requests to one model over gRPC, one channel per thread, with retries."""

    def __init__(self, url: str, model: str, timeout_s: float = 30.0, retries: int = 5, backoff_s: float = 0.5):
        self.url = url.removeprefix("grpc://")
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()  # requests run in several threads
        self.retried = 0

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(
                self.url, channel_args=[("grpc.initial_reconnect_backoff_ms", 200),
                                        ("grpc.max_reconnect_backoff_ms", 1000)])
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def infer(self, dense_raw: np.ndarray, cat_hash: np.ndarray) -> tuple[np.ndarray, int, float, int]:
        """(ctr [n] float32, the version that answered, latency ms, answered at ms since the epoch)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        dense = np.ascontiguousarray(dense_raw, dtype=np.float32)
        cats = np.ascontiguousarray(cat_hash, dtype=np.int64)
        for attempt in range(self.retries + 1):
            inputs = [grpcclient.InferInput(DENSE_INPUT, list(dense.shape), "FP32"),
                      grpcclient.InferInput(CATEGORICAL_INPUT, list(cats.shape), "INT64")]
            inputs[0].set_data_from_numpy(dense)
            inputs[1].set_data_from_numpy(cats)
            t0 = time.perf_counter()
            try:
                result = self._client().infer(self.model, inputs, client_timeout=self.timeout_s,
                                              outputs=[grpcclient.InferRequestedOutput(OUTPUT)])
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                if attempt < self.retries and any(code in status for code in _RETRYABLE):
                    with self._lock:
                        self.retried += 1
                    delay = self.backoff_s * 2 ** attempt
                    print(f"WARNING: Triton at {self.url}: {status} {exc.message()}; retrying the request "
                          f"in {delay:g}s (retry {attempt + 1} of {self.retries})", flush=True)
                    time.sleep(delay)
                    continue
                raise ReplayError(f"Triton at {self.url} failed inference on {self.model!r} "
                                  f"after {attempt + 1} attempt(s): {status} {exc.message()}") from None
            latency = (time.perf_counter() - t0) * 1000
            pred = result.as_numpy(OUTPUT).reshape(-1).astype(np.float32, copy=False)
            return pred, int(result.get_response().model_version), latency, int(time.time() * 1000)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for client in self._clients:
            client.close()
