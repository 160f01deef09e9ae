"""AUC and logloss, the same offline (evaluate, the blessing) and online (the monitor)."""
import numpy as np
import pytest

from criteo_kernel.metrics import log_loss, roc_auc

pytestmark = pytest.mark.unit


def test_auc_and_logloss_against_known_values():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(1.0)
    assert np.isnan(roc_auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))
    assert log_loss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))
