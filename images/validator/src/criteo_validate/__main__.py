"""`python -m criteo_validate [ARGS]`: the validation step (validate.py).

`python -m criteo_validate reference --profiles P.json ... --output REF.json` merges day profiles
into the reference profile a full retrain saves with its model (profile.py).
"""
import logging
import sys

# Before anything imports great_expectations: it is chatty at INFO.
logging.getLogger("great_expectations").setLevel(logging.WARNING)


def main(argv=None) -> int:
    from criteo_kernel.result import run_step

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reference"]:
        from .profile import main as reference_main

        return run_step(reference_main, argv[1:], "reference")
    from .validate import main as validate_main

    return run_step(validate_main, argv, "validate")


if __name__ == "__main__":
    sys.exit(main())
