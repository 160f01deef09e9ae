"""Triton python-backend model: raw Criteo features in, click probability out.

Inputs: dense_raw FP32 [13] (NaN = missing), cat_hash INT64 [26] (the 32-bit hash as an integer,
-1 = missing). Output: ctr FP32 [1]. Preprocessing runs from the version's exported lookup tables
and the DCN through onnxruntime (the pytriton tritonserver ships the python backend only; the same
version folder loads in production Triton).
"""
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        sys.path.insert(0, version_dir)
        from criteo_serving import CTRModel

        self.model = CTRModel(version_dir, threads=int(os.environ.get("CRITEO_ORT_THREADS", "1")))

    def execute(self, requests):
        responses = []
        for request in requests:
            dense = pb_utils.get_input_tensor_by_name(request, "dense_raw").as_numpy()
            cats = pb_utils.get_input_tensor_by_name(request, "cat_hash").as_numpy()
            try:
                prob = self.model.predict(dense, cats).reshape(-1, 1).astype(np.float32)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("ctr", prob)]))
            except Exception as exc:  # one bad request must not take the model down
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
