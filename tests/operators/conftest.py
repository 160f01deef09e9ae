from datetime import date

import pytest


@pytest.fixture
def cfg(tmp_path):
    """The pipeline's settings with the bucket in a temporary folder."""
    from operators.pipeline.config import PipelineConfig

    return PipelineConfig(base_url=str(tmp_path), raw_url=str(tmp_path / "raw"), runtime="local",
                          day0=date(2026, 1, 1), num_days=24, model_name="criteo_dcn")
