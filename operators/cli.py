"""`criteo-mlops`: the project's command line, installed into the main environment by `make setup`.

    criteo-mlops validate PATH [--data-docs DIR] [--reference REF.json] [--min-rows N] [--sample-rows N]
    criteo-mlops manifest FILE [FILE ...]      write each raw day's landing manifest (FILE.manifest.json)
    criteo-mlops versions                      the model versions in the Triton repository
    criteo-mlops rollback [--to N]             serve an earlier version again (checked by a smoke inference)

`validate` checks one raw Criteo day file (day_N or day_N.gz, TSV) against the raw-day suite the
pipeline's gate uses: the extract and validate steps run on it as the DAG runs them (the local
step runtime, operators/runtime/local.py: each in its image's environment; the extract into a
scratch folder, nothing is written next to PATH), and their result manifests are read. It prints the
summary (every failed expectation with its column, rule and the observed values), writes the
GX Data Docs site, and exits 0 when the day passes, 1 when it fails or cannot be read.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from pathlib import Path


def _validate(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        print(f"ERROR: {path}: no such file (expected a raw Criteo day: TSV, plain or .gz)", file=sys.stderr)
        return 1
    from .pipeline.layout import safe_run_id
    from .runtime.argv import to_argv
    from .runtime.base import StepFailed
    from .runtime.catalogue import STEPS
    from .runtime.local import LocalProcessRuntime

    # The steps run as the pipeline runs them (their images' environments): the Airflow side imports no step code.
    runtime = LocalProcessRuntime()
    docs = Path(args.data_docs or Path.cwd() / "criteo-data-docs" / safe_run_id(path.name))
    with tempfile.TemporaryDirectory(prefix="criteo-validate-") as tmp:
        part = os.path.join(tmp, "extracted", "day")
        try:
            extracted = runtime.run(STEPS["extract"], to_argv({"--input": path.resolve(), "--output": part}))
        except (StepFailed, FileNotFoundError) as exc:   # FileNotFoundError: the step's environment is missing
            print(f"FAILED: {(getattr(exc, 'result', None) or {}).get('error') or exc}", file=sys.stderr)
            return 1
        print(f"extracted {extracted.get('rows')} rows ({extracted.get('malformed_rows')} malformed) from "
              f"{path.resolve()} to {part} in {extracted.get('seconds')} s")
        argv = to_argv({"--input": part, "--suite": ["raw_day", "drift"] if args.reference else "raw_day",
                        "--reference": args.reference, "--data-docs": docs.resolve(), "--run-name": f"cli-{path.name}",
                        "--min-rows": args.min_rows, "--sample-rows": args.sample_rows})
        try:
            print(runtime.run(STEPS["validate"], argv).get("summary", ""))
        except (StepFailed, FileNotFoundError) as exc:
            summary = (getattr(exc, "result", None) or {}).get("summary")
            # exit 1 with a summary: the day failed its expectations; anything else: it could not be validated
            failed = summary and getattr(exc, "exit_code", None) == 1
            print(summary or str(exc), file=sys.stdout if failed else sys.stderr)
            return 1
    return 0


def _manifest(args: argparse.Namespace) -> int:
    """The landing contract's last step for a writer without one of its own (criteo_kernel.landing)."""
    from criteo_kernel.landing import manifest_url, write_manifest

    for url in args.files:
        m = write_manifest(url)
        print(f"{manifest_url(url)}: {m.rows} rows, {m.bytes} bytes, sha256 {m.sha256}")
    return 0


@functools.cache
def _settings():
    """The settings, read once per command (outside a task: the environment, else the defaults)."""
    from .pipeline.config import Settings

    return Settings.load()


def _hook(promoting: bool = False):
    """The model repository the settings name; one that promotes writes their queue delay and instance kind."""
    from .hooks.model_repository import ModelRepositoryHook
    from .pipeline.layout import Layout

    layout = Layout(_settings())
    serving = _settings().serving
    return ModelRepositoryHook(layout, serving.max_queue_delay_us, serving.instance_kind) if promoting else \
        ModelRepositoryHook(layout)


def _replicas(spec: str | None) -> list:
    """The Triton replicas of --triton, else of the settings (criteo_triton_replicas, criteo_triton_grpc_url)."""
    from .hooks.serving import replicas

    serving = _settings().serving
    return replicas(serving.triton_replicas if spec is None else spec, serving.triton_grpc_url)


def _versions(args: argparse.Namespace) -> int:
    hook = _hook()
    production = hook.production_version()
    print(f"model repository: {hook.model_dir}")
    for v in hook.versions():
        lin = hook.lineage(v)
        auc = (lin.get("evaluation") or {}).get("candidate_metrics", {}).get("auc")
        marks = ("  <- production" if v == production else "") + \
                ("  (rolled back)" if hook.is_rolled_back(v) else "")
        print(f"  {v:>4}  {lin.get('mode', '?'):<11} days {lin.get('days')}  parent {lin.get('parent_version')}  "
              f"AUC {auc if auc is None else round(auc, 4)}  {lin.get('deployed_at', '')}{marks}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from .hooks.serving import LateReplicaNotReady, SmokeTestFailed, rollback
    from .hooks.triton import TritonModelError, TritonUnavailable

    try:
        hook = _hook(promoting=True)   # a bad queue delay setting: "rollback not done", as a bad version is
        result = rollback(hook, _replicas(args.triton), to=args.to, reason=args.reason,
                          resolve=lambda: _replicas(args.triton))
    except LateReplicaNotReady as exc:
        model = hook.layout.model_name
        print(f"ERROR: rolled back on every replica that answered, but {exc.url} appeared meanwhile and was not "
              f"ready after {exc.wait_s:g}s. Once it is ready, load {model} there (POST "
              f"/v2/repository/models/{model}/load on its HTTP port) or delete the pod.", file=sys.stderr)
        return 1
    except (ValueError, SmokeTestFailed, TritonModelError, TritonUnavailable) as exc:
        print(f"ERROR: rollback not done: {exc}", file=sys.stderr)
        return 1
    print(f"{hook.layout.model_name}: version {result['version']} serves again (was {result['previous_version']}) "
          f"on {len(result['smoke']['replicas'])} replica(s); smoke inference on {result['smoke']['rows']} held-out "
          f"rows matched (max |diff| "
          f"{result['smoke']['max_abs_diff']:.2e})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="criteo-mlops", description="Criteo MLOps pipeline tools.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="validate one raw Criteo day file against the raw-day suite",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("path", help="raw day file: day_N or day_N.gz (TSV, 40 fields, no header)")
    v.add_argument("--data-docs", default=None,
                   help="folder for the GX Data Docs site (default ./criteo-data-docs/<file name>)")
    v.add_argument("--reference", default=None,
                   help="reference profile (a version's lineage names it: artifacts.reference_profile): "
                        "learned bounds + drift")
    v.add_argument("--min-rows", type=int, default=None, help="fewest rows a day may have (the validator's "
                                                               "default: 1000)")
    v.add_argument("--sample-rows", type=int, default=None,
                   help="validate rows on a deterministic sample of this many (the validator's default: 200000; "
                        "0 = all)")
    m = sub.add_parser("manifest", help="write the landing manifest of complete raw day files",
                       description="Write FILE.manifest.json (rows, bytes, sha256) beside each raw day file once "
                                   "it is complete: the sensor then takes the day without waiting for it to settle, "
                                   "and validation checks the day read against it. Local paths or gs:// URLs.")
    m.add_argument("files", nargs="+", help="raw day files (day_N or day_N.gz)")
    sub.add_parser("versions", help="list the model versions in the Triton repository (criteo_base_url)")
    r = sub.add_parser("rollback", help="serve an earlier model version again",
                       description="Point the model at an earlier version (default: the newest one below "
                                   "production), tell Triton to load it and check it with a smoke inference; "
                                   "if that fails, the current version keeps serving. Settings come from the "
                                   "Airflow Variables (AIRFLOW_VAR_CRITEO_BASE_URL, "
                                   "AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL).")
    r.add_argument("--to", type=int, default=None, help="the version to serve (default: the newest below production)")
    r.add_argument("--triton", default=None,
                   help="Triton gRPC address(es), host:port, comma-separated; each name stands for every address it "
                        "resolves to (default: Variable criteo_triton_replicas, else criteo_triton_grpc_url)")
    r.add_argument("--reason", default="rolled back by hand", help="recorded in the version left")
    args = p.parse_args(argv)
    commands = {"validate": _validate, "manifest": _manifest, "versions": _versions, "rollback": _rollback}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
