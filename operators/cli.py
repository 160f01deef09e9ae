"""`criteo-mlops`: the project's command line, installed into the main environment by `make setup`.

    criteo-mlops validate PATH [--data-docs DIR] [--reference REF.json] [--min-rows N] [--sample-rows N]

`validate` checks one raw Criteo day file (day_N or day_N.gz, TSV) against the raw-day suite the
pipeline's gate uses: the file is extracted exactly as the DAG's extract step does (into a scratch
folder, nothing is written next to PATH), then validated by the same validator. It prints the
summary (every failed expectation with its column, rule and the observed values), writes the
GX Data Docs site, and exits 0 when the day passes, 1 when it fails or cannot be read.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path


def _validate(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        print(f"ERROR: {path}: no such file (expected a raw Criteo day: TSV, plain or .gz)", file=sys.stderr)
        return 1
    docs = Path(args.data_docs or Path.cwd() / "criteo-data-docs" / re.sub(r"[^A-Za-z0-9._=-]", "_", path.name))
    from criteo_steps.extract import ExtractError, extract
    from criteo_validate.validate import main as validate_main

    with tempfile.TemporaryDirectory(prefix="criteo-validate-") as tmp:
        part = os.path.join(tmp, "extracted", "day")
        try:
            extract(str(path.resolve()), part)
        except ExtractError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        argv = ["--input", part, "--suite", "raw_day", "--data-docs", str(docs.resolve()),
                "--run-name", f"cli-{path.name}", "--min-rows", str(args.min_rows),
                "--sample-rows", str(args.sample_rows)]
        if args.reference:
            argv += ["--suite", "drift", "--reference", args.reference]
        code = validate_main(argv, result_line=False)
    return 0 if code == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="criteo-mlops", description="Criteo MLOps pipeline tools.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="validate one raw Criteo day file against the raw-day suite",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("path", help="raw day file: day_N or day_N.gz (TSV, 40 fields, no header)")
    v.add_argument("--data-docs", default=None,
                   help="folder for the GX Data Docs site (default ./criteo-data-docs/<file name>)")
    v.add_argument("--reference", default=None,
                   help="reference profile (reference_profile.json of a model version): learned bounds + drift")
    v.add_argument("--min-rows", type=int, default=1000, help="fewest rows a day may have (default 1000)")
    v.add_argument("--sample-rows", type=int, default=200_000,
                   help="validate rows on a deterministic sample of this many (default 200000; 0 = all)")
    args = p.parse_args(argv)
    if args.command == "validate":
        return _validate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
