"""Triton python-backend model: raw Criteo features in, click probability out.

Inputs: dense_raw FP32 [13] (NaN = missing), cat_hash INT64 [26] (the 32-bit hash as an integer,
-1 = missing). Output: ctr FP32 [1]. Preprocessing runs from the version's exported lookup tables
and the DCN through onnxruntime (the pytriton tritonserver ships the python backend only; the same
version folder loads in production Triton): its CPU provider for a KIND_CPU instance, its CUDA
provider on the instance's GPU for a KIND_GPU one.
"""
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


def instance_gpu(args):
    """The GPU this instance runs on, or None. The python backend passes (both strings) the
    instance group's kind, "GPU" for KIND_GPU or "CPU", and the instance's device id: one instance
    per GPU of the group (config.pbtxt's instance_group; deploy writes criteo_triton_instance_kind)."""
    if args.get("model_instance_kind") == "GPU":
        return int(args["model_instance_device_id"])
    return None


class TritonPythonModel:
    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        # The version folder is the repository's: leave no __pycache__ in it (the stub's embedded
        # interpreter ignores PYTHONDONTWRITEBYTECODE; model.py's own .pyc is written before this runs).
        sys.dont_write_bytecode = True
        sys.path.insert(0, version_dir)
        from criteo_serving import CTRModel

        from criteo_kernel import signature

        self.signature = signature
        self.model = CTRModel(version_dir, threads=int(os.environ.get("CRITEO_ORT_THREADS", "1")),
                              gpu=instance_gpu(args))

    def execute(self, requests):
        """One onnxruntime run for all the requests the dynamic batcher hands over at once (that
        is what batching them is for); if that fails, each request alone, so that one bad request
        fails by itself and never takes the others or the model down."""
        sig = self.signature
        inputs = [(pb_utils.get_input_tensor_by_name(r, sig.DENSE_INPUT).as_numpy(),
                   pb_utils.get_input_tensor_by_name(r, sig.CATEGORICAL_INPUT).as_numpy()) for r in requests]
        if len(inputs) > 1:
            try:
                prob = self._predict(np.concatenate([d for d, _ in inputs]), np.concatenate([c for _, c in inputs]))
                bounds = np.cumsum([0] + [len(d) for d, _ in inputs])
                return [pb_utils.InferenceResponse([pb_utils.Tensor(sig.OUTPUT, np.ascontiguousarray(prob[a:b]))])
                        for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            except Exception:  # noqa: BLE001 - find the culprit below, request by request
                pass
        responses = []
        for dense, cats in inputs:
            try:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(sig.OUTPUT, self._predict(dense, cats))]))
            except Exception as exc:  # one bad request must not take the model down
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def _predict(self, dense, cats):
        return np.ascontiguousarray(self.model.predict(dense, cats).reshape(-1, 1), dtype=np.float32)
