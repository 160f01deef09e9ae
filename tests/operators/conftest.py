import pytest


@pytest.fixture
def cfg(tmp_path):
    """The pipeline's settings with the bucket in a temporary folder."""
    from operators.pipeline.config import Settings

    return Settings.with_values(criteo_base_url=str(tmp_path))
