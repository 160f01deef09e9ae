"""Serving-time preprocessing and inference, in numpy + onnxruntime alone.

This file is copied into every Triton model version (beside model.py, with the criteo_kernel
package it reads the schema and signature from) and is also what the evaluate step scores
candidates with, so the offline metrics are those of the served artifact. It must not import
NVTabular, torch or Airflow: the Triton python backend stub has none of them.
"""
from __future__ import annotations

import json
import os

import numpy as np

from criteo_kernel.artifacts import CATEGORY_TABLES, CONTINUOUS_STATS, MODEL_ONNX, PREPROCESSING, SERVING_TABLES
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS
from criteo_kernel.signature import ONNX_CATEGORICAL_INPUT, ONNX_DENSE_INPUT, OUTPUT


class Preprocessor:
    """Applies the fitted NVTabular workflow's encoding from its exported lookup tables."""

    def __init__(self, serving_dir: str):
        tables = np.load(os.path.join(serving_dir, CATEGORY_TABLES))
        with open(os.path.join(serving_dir, CONTINUOUS_STATS)) as fh:
            cont = json.load(fh)
        self.keys = [tables[f"{c}_keys"] for c in CAT_COLUMNS]
        self.ids = [tables[f"{c}_ids"] for c in CAT_COLUMNS]
        self.oov = [int(cont["oov_ids"][c]) for c in CAT_COLUMNS]
        self.mean = np.array([cont["mean"][c] for c in INT_COLUMNS], dtype=np.float64)
        self.std = np.array([cont["std"][c] for c in INT_COLUMNS], dtype=np.float64)
        self.fill = float(cont["fill_value"])
        self.clip_min = float(cont["clip_min"])

    def transform(self, dense_raw: np.ndarray, cat_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """dense_raw [B,13] (NaN = missing), cat_hash [B,26] int64 (-1 = missing) -> model inputs."""
        cat_hash = np.asarray(cat_hash, dtype=np.int64)
        cat_ids = np.empty(cat_hash.shape, dtype=np.int64)
        for j in range(cat_hash.shape[1]):
            keys, col = self.keys[j], cat_hash[:, j]
            pos = np.minimum(np.searchsorted(keys, col), len(keys) - 1)
            found = keys[pos] == col
            cat_ids[:, j] = np.where(found, self.ids[j][pos], self.oov[j])
        x = np.asarray(dense_raw, dtype=np.float64)
        x = np.where(np.isnan(x), self.fill, x)
        x = np.log(np.maximum(x, self.clip_min).astype(np.float32) + 1).astype(np.float64)
        std = np.where(self.std > 0, self.std, 1.0)
        return cat_ids, ((x - self.mean) / std).astype(np.float32)


class CTRModel:
    """One exported model version: preprocessing tables + model.onnx."""

    def __init__(self, version_dir: str, threads: int = 0, gpu: int | None = None):
        """:param gpu: the CUDA device to run the model on (Triton's KIND_GPU instance's device),
        through onnxruntime's CUDA execution provider; None: the CPU provider."""
        import onnxruntime as ort

        self.pre = Preprocessor(os.path.join(version_dir, PREPROCESSING, SERVING_TABLES))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if gpu is not None:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(f"the model instance is KIND_GPU (device {gpu}) but this onnxruntime "
                                   f"{ort.__version__} has no CUDAExecutionProvider (providers: "
                                   f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu in the "
                                   "Triton image, or set criteo_triton_instance_kind=KIND_CPU")
            providers = [("CUDAExecutionProvider", {"device_id": int(gpu)}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(os.path.join(version_dir, MODEL_ONNX), opts, providers=providers)
        # onnxruntime falls back to the CPU, with a logged error only, when the CUDA provider cannot
        # start (CUDA or cuDNN missing): the pod would hold a GPU and compute on its CPUs.
        if gpu is not None and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"onnxruntime could not start its CUDA provider on device {gpu} (session providers: "
                               f"{self.session.get_providers()}): see the server log for the CUDA/cuDNN library "
                               "it did not find, or set criteo_triton_instance_kind=KIND_CPU")

    def predict(self, dense_raw: np.ndarray, cat_hash: np.ndarray) -> np.ndarray:
        cat_ids, dense = self.pre.transform(dense_raw, cat_hash)
        (prob,) = self.session.run([OUTPUT], {ONNX_CATEGORICAL_INPUT: cat_ids, ONNX_DENSE_INPUT: dense})
        return prob.reshape(-1)
