import pytest
import torch

from bayesmri.data.digits import N_TEST, digits_available, load_digits28
from bayesmri.data.phantoms import random_ellipse_phantoms


@pytest.mark.skipif(not digits_available(), reason="scikit-learn not installed")
def test_digits_shape_range_and_splits():
    tr, ltr = load_digits28("train", return_labels=True)
    te = load_digits28("test")
    assert tr.shape[1:] == (28, 28) and te.shape == (N_TEST, 28, 28)
    assert tr.shape[0] + te.shape[0] == 1797
    assert float(tr.min()) >= 0 and float(tr.max()) == pytest.approx(1.0)
    assert float(tr[:, :4].abs().max()) == 0 and float(tr[:, -4:].abs().max()) == 0  # MNIST-like padding
    assert set(ltr.tolist()) == set(range(10))
    # the splits are disjoint: no test image equals a training image
    d = torch.cdist(te.flatten(1)[:50], tr.flatten(1)).min(1).values
    assert float(d.min()) > 0
    with pytest.raises(ValueError):
        load_digits28("val")


def test_phantoms_deterministic_and_ct_like():
    a = random_ellipse_phantoms(3, 32, seed=1)
    b = random_ellipse_phantoms(3, 32, seed=1)
    c = random_ellipse_phantoms(3, 32, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 32, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert float(a[:, 0, 0].abs().max()) == 0  # air outside the body
    assert float((a > 0).float().mean()) > 0.3  # a body fills the field of view
