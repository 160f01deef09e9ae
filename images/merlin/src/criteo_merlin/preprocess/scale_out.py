"""Preprocessing over a dask cluster inside the step's pod: one worker per GPU, or per process.

A real Criteo day is ~195M rows (45-55 GB of text). With more than one GPU in the pod, the
preprocess step fits and applies the NVTabular workflow on a dask-cuda LocalCUDACluster over all of
them; `--workers N` with no GPU runs the same graph on a CPU LocalCluster of N processes (that is
how this path is tested on machines without a GPU). One worker and no GPU keeps the in-process path
of criteo_merlin.preprocess.preprocess.

The input is read in place (a folder or gs:// through fsspec), never downloaded first: each dask
partition is a run of whole parquet row groups of one extracted file, about `part_size` bytes of
text, decoded by criteo_merlin.preprocess.decoding (the same rules and errors as the in-process path) and handed
to the GPU as a cudf frame.

    plan = ClusterPlan.choose("auto")                   # from the GPUs the pod sees
    with dask_cluster(plan, "0.8", scratch):            # LocalCUDACluster / LocalCluster / nothing
        dataset = piece_dataset(plan_pieces(urls, "1GB"), gpu=plan.gpu)
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from criteo_kernel import storage
from criteo_kernel.schema import COLUMNS

from .decoding import decode_table, typed_meta


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else what NVML counts, else 0.

    On Kubernetes the NVIDIA device plugin exposes only the pod's `nvidia.com/gpu` devices, so NVML
    counts exactly those.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, no driver, no device: no GPU for this step
        return 0


def rapids_installed() -> bool:
    """cudf and dask-cuda are importable (the Merlin GPU image has them; .venv-steps does not)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("cudf", "dask_cuda"))


@dataclass(frozen=True)
class ClusterPlan:
    """How preprocessing runs: `workers` dask workers, on GPUs or not; one CPU worker = in process."""

    workers: int
    gpu: bool
    note: str = ""

    @property
    def distributed(self) -> bool:
        return self.gpu or self.workers > 1

    @classmethod
    def choose(cls, workers: str, gpus: int | None = None, rapids: bool | None = None) -> ClusterPlan:
        """`workers`: "auto" (one per GPU when the pod has more than one, else in process) or N.

        N workers use the GPUs when the pod has at least N of them and RAPIDS is installed, else
        they are N CPU processes.
        """
        gpus = visible_gpus() if gpus is None else gpus
        rapids = rapids_installed() if rapids is None else rapids
        if workers == "auto":
            if gpus > 1 and rapids:
                return cls(gpus, True)
            if gpus > 1:
                return cls(1, False, f"{gpus} GPUs visible but cudf/dask_cuda are not installed")
            return cls(1, False)
        n = at_least_one(int, workers, "--workers must be 'auto' or a whole number >= 1")
        if rapids and 0 < gpus < n:
            raise SystemExit(f"preprocess: --workers {n} but the pod has {gpus} GPU(s): request "
                             f"{n} (criteo_pod_gpus) or use --workers auto")
        if rapids and gpus >= n:
            return cls(n, True)
        return cls(n, False, "no GPU" if not gpus else "cudf/dask_cuda are not installed")

    def describe(self) -> str:
        if self.gpu:
            text = f"dask-cuda LocalCUDACluster, {self.workers} GPU worker(s)"
        elif self.workers > 1:
            text = f"dask LocalCluster, {self.workers} CPU worker process(es)"
        else:
            text = "in process (pandas, no dask cluster)"
        return f"{text} ({self.note})" if self.note else text


def device_memory_limit(value: str):
    """"0.8" (a fraction of each GPU's memory) or "30GB" (bytes), as dask-cuda takes it."""
    from dask.utils import parse_bytes

    try:
        frac = float(value)
    except ValueError:
        try:
            return parse_bytes(value)
        except ValueError:
            frac = -1.0
    if not 0 < frac <= 1:
        raise SystemExit(f"preprocess: --device-memory-limit must be a fraction in (0, 1] or a size "
                         f"such as 30GB, got {value!r}")
    return frac


def part_bytes(value: str) -> int:
    from dask.utils import parse_bytes

    return at_least_one(parse_bytes, value, "--part-size must be a size such as 1GB or 256MB")


def at_least_one(parse, value: str, rule: str) -> int:
    """`parse(value)` when it is a whole number >= 1, else the step stops naming the flag's rule."""
    try:
        n = parse(value)
    except ValueError:
        n = 0
    if n < 1:
        raise SystemExit(f"preprocess: {rule}, got {value!r}")
    return n


@contextlib.contextmanager
def dask_cluster(plan: ClusterPlan, memory_limit: str, scratch: str):
    """The cluster the plan asks for, with a client NVTabular finds (merlin's global client).

    `memory_limit`: device memory each GPU worker uses before spilling to host memory (dask-cuda's
    `device_memory_limit`). Worker scratch (spilled data) goes under `scratch`, the step's own
    temporary folder on the pod's disk.
    """
    if not plan.distributed:
        yield None
        return
    from dask.distributed import Client
    from merlin.core.utils import set_dask_client

    local_dir = os.path.join(scratch, "dask-worker-space")
    if plan.gpu:
        # Never ran here: no GPU on the machines this project is tested on (docs/limitations.md).
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(n_workers=plan.workers, device_memory_limit=device_memory_limit(memory_limit),
                                   local_directory=local_dir, threads_per_worker=1, dashboard_address=None)
    else:
        from dask.distributed import LocalCluster

        cluster = LocalCluster(n_workers=plan.workers, threads_per_worker=1, processes=True,
                               local_directory=local_dir, dashboard_address=None)
    client = Client(cluster)
    set_dask_client(client)
    try:
        yield client
    finally:
        set_dask_client(None)
        client.close()
        cluster.close()


@dataclass(frozen=True)
class Piece:
    """One dask partition: whole row groups of one extracted parquet file."""

    url: str
    row_groups: tuple[int, ...]
    rows: int

    @property
    def source(self) -> str:
        first, last = self.row_groups[0], self.row_groups[-1]
        return f"{self.url} (row groups {first}-{last})" if last != first else f"{self.url} (row group {first})"


def list_parquet(url: str) -> list[str]:
    """The parquet files of one extracted split folder, as URLs, in name order."""
    fs, path = storage.fs_path(url)
    found = sorted(fs.glob(path.rstrip("/") + "/*.parquet"))
    return [f if storage.is_local(url) else f"{url.split('://', 1)[0]}://{f}" for f in found]


def plan_pieces(urls: list[str], part_size: int) -> list[Piece]:
    """Group each file's row groups into pieces of about `part_size` bytes (uncompressed text).

    A piece never spans files, so an error names one file; a row group larger than `part_size` is
    a piece of its own.
    """
    import pyarrow.parquet as pq

    pieces: list[Piece] = []
    for url in urls:
        fs, path = storage.fs_path(url)
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        run, size, rows = [], 0, 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            if run and size + rg.total_byte_size > part_size:
                pieces.append(Piece(url, tuple(run), rows))
                run, size, rows = [], 0, 0
            run.append(g)
            size += rg.total_byte_size
            rows += rg.num_rows
        if run:
            pieces.append(Piece(url, tuple(run), rows))
    return pieces


class PieceReader:
    """dask `from_map` callable: a Piece -> its typed frame (pandas, or cudf on a GPU worker).

    Stateless, so it pickles to workers; reading goes through fsspec on the worker itself.
    """

    def __init__(self, gpu: bool):
        self.gpu = gpu

    def __call__(self, piece: Piece):
        import pyarrow.parquet as pq

        fs, path = storage.fs_path(piece.url)
        with fs.open(path, "rb") as fh:
            table = pq.ParquetFile(fh, read_dictionary=COLUMNS).read_row_groups(
                list(piece.row_groups), columns=COLUMNS, use_threads=False)
        frame = decode_table(table, piece.source).frame()
        if not self.gpu:
            return frame
        # Never ran here (no GPU): the typed frame moves to the worker's GPU, where NVTabular runs.
        import cudf

        return cudf.DataFrame.from_pandas(frame)


def piece_dataset(pieces: list[Piece], gpu: bool):
    """A lazy nvt.Dataset with one partition per piece, in order."""
    import dask.dataframe as dd
    import nvtabular as nvt
    from dask.base import tokenize

    meta = typed_meta()
    if gpu:
        import cudf  # never ran here

        meta = cudf.DataFrame.from_pandas(meta)
    ddf = dd.from_map(PieceReader(gpu), pieces, meta=meta, enforce_metadata=False, label="decode-extracted",
                      token=tokenize([(p.url, p.row_groups) for p in pieces], gpu))
    return nvt.Dataset(ddf, cpu=not gpu)
