"""The container layer: the images `make images` built, run by the engine `make engine` started
(Podman, host networking, no registry). `make test-containers` does both first; run alone, these
tests fail saying which of the two is missing. The `engine` and `images` fixtures and the compose
stack (`compose_stack`) live in tests/fixtures, registered in tests/conftest.py: the stack is shared
with the database-restart fault in tests/faults, which the same `make test-containers` runs."""
from __future__ import annotations

from ..fixtures.engine import IMAGES, REPO, TAG, podman  # noqa: F401  (the layer's modules import them from here)
