"""`python -m criteo_validator [validate] ARGS`: the validation step (validate.py); the command is
optional, validation being what this image is for.

`python -m criteo_validator reference --profiles P.json ... --output REF.json` merges day profiles
into the reference profile a full retrain saves with its model (profile.py).
"""
import logging
import sys

from criteo_kernel.result import dispatch

# Before anything imports great_expectations: it is chatty at INFO.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

if __name__ == "__main__":
    sys.exit(dispatch("criteo_validator"))
