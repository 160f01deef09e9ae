"""`python -m criteo_validate [ARGS]`: the validation step (see validate.py).

`python -m criteo_validate reference --profiles P.json ... --output REF.json` merges day profiles
into the reference profile a full retrain saves with its model (see profile.py).
"""
import logging
import sys

# Before anything imports great_expectations: it is chatty at INFO.
logging.getLogger("great_expectations").setLevel(logging.WARNING)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reference"]:
        from .profile import main as reference_main

        return reference_main(argv[1:])
    from .validate import main as validate_main

    return validate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
