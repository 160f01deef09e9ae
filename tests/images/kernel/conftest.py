"""The shared kernel alone on the path, as every image copies it; its tests run in both environments."""
import sys

from tests.conftest import REPO

src = REPO / "images" / "kernel" / "src"
if str(src) not in sys.path:
    sys.path.insert(0, str(src))


import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

from tests.fixtures import gcsfuse  # noqa: E402

# The filesystems the storage seam serves: a local disk, a gcsfuse mount (tests/fixtures/gcsfuse.py),
# gs:// through gcsfs on the GCS emulator.
BACKENDS = [pytest.param("local", marks=pytest.mark.unit), pytest.param("gcsfuse", marks=pytest.mark.unit),
            pytest.param("gcs", marks=pytest.mark.integration)]


@pytest.fixture(scope="module")
def bucket(request, tmp_path_factory):
    """A gs:// bucket on the GCS emulator, for this module."""
    try:
        from local_servers.gcs import LocalGcsEmulator, emulator_binary

        emulator_binary()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"no GCS emulator in this environment ({exc}); the gs:// case runs in .venv")
    emulator = LocalGcsEmulator(work_dir=tmp_path_factory.mktemp("gcs"))
    emulator.start()
    saved = {k: os.environ.get(k) for k in emulator.env()}
    os.environ.update(emulator.env())
    try:
        import fsspec

        fsspec.filesystem("gs").clear_instance_cache()
        yield emulator.create_bucket("criteo-storage")
    finally:
        emulator.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=BACKENDS)
def base(request, tmp_path):
    """A base URL on one of the three filesystems."""
    if request.param == "gcs":
        return f"{request.getfixturevalue('bucket')}/{uuid.uuid4().hex[:8]}"
    if request.param == "gcsfuse":
        gcsfuse.install(tmp_path)
        request.addfinalizer(gcsfuse.uninstall)
    return str(tmp_path / "bucket")


