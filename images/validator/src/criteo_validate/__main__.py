"""`python -m criteo_validate ...`: validate one extracted day; exit 0 passed, 1 failed, 2 unreadable."""
import logging
import sys

# Before anything imports great_expectations: it is chatty at INFO.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

from .validate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
