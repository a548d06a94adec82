import pytest
import torch

from bayesmri.physics import CoilImageMRI, MultiCoilMRI, SingleCoilMRI, fft2c, ifft2c


def _crandn(*shape, g):
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def _maps(B, C, H, W, g):
    s = _crandn(B, C, H, W, g=g)
    return s / torch.linalg.vector_norm(s, dim=1, keepdim=True)


def _mask(H, W, g):
    m = (torch.rand(W, generator=g) < 0.3).float()
    m[W // 2 - 2 : W // 2 + 2] = 1
    return m


def test_fft_is_centred_and_unitary():
    g = torch.Generator().manual_seed(0)
    x = _crandn(2, 16, 12, g=g)
    k = fft2c(x)
    assert torch.allclose(ifft2c(k), x, atol=1e-5)
    assert torch.allclose(torch.linalg.vector_norm(k), torch.linalg.vector_norm(x), rtol=1e-5)
    # A constant image has all its energy at the centre index (H//2, W//2).
    k1 = fft2c(torch.ones(1, 16, 12, dtype=torch.complex64))
    assert abs(k1[0, 8, 6]) == pytest.approx((16 * 12) ** 0.5, rel=1e-5)


@pytest.mark.parametrize("B", [1, 2])
def test_sense_matches_dense_matrix(B):
    g = torch.Generator().manual_seed(1)
    H, W, C = 6, 5, 3
    S = _maps(B, C, H, W, g)
    op = MultiCoilMRI(S, _mask(H, W, g))
    n = H * W
    # Build A column by column and compare A^H with the conjugate transpose.
    E = torch.eye(n, dtype=torch.complex64).reshape(n, H, W)
    cols = torch.stack([op.A(E[i : i + 1].expand(B, H, W)) for i in range(n)], -1)  # (B, C, H, W, n)
    Amat = cols.reshape(B, C * H * W, n)
    y = _crandn(B, C, H, W, g=g)
    ref = torch.einsum("bkn,bk->bn", Amat.conj(), y.reshape(B, -1)).reshape(B, H, W)
    assert torch.allclose(op.A_adjoint(y), ref, atol=1e-5)


def test_sense_broadcasts_chains_over_operator_batch():
    g = torch.Generator().manual_seed(2)
    op = MultiCoilMRI(_maps(1, 4, 8, 8, g), _mask(8, 8, g))
    x = _crandn(5, 8, 8, g=g)
    assert op.A(x).shape == (5, 4, 8, 8)
    assert torch.allclose(op.A(x)[3:4], op.A(x[3:4]))


def test_coil_image_projections_sum_to_identity_and_are_idempotent():
    g = torch.Generator().manual_seed(3)
    op = CoilImageMRI(_mask(8, 10, g), (8, 10), ncoils=3)
    x = _crandn(2, 3, 8, 10, g=g)
    pm, pn = op.measured_projection(x), op.nullspace_projection(x)
    assert torch.allclose(pm + pn, x, atol=1e-6)
    assert torch.allclose(op.measured_projection(pm), pm, atol=1e-5)
    assert torch.allclose(op.nullspace_projection(pn), pn, atol=1e-5)
    assert abs(torch.sum(pm.conj() * pn)) < 1e-4 * torch.linalg.vector_norm(x) ** 2


def test_a_dagger_solves_least_squares_and_tikhonov():
    g = torch.Generator().manual_seed(4)
    H = W = 12
    S = _maps(2, 4, H, W, g)
    op = MultiCoilMRI(S, _mask(H, W, g))
    x = _crandn(2, H, W, g=g)
    y = op.A(x)
    lam = 0.1
    xd = op.A_dagger(y, lam=lam, max_iter=200, tol=1e-7)
    resid = op.normal(xd) + lam * xd - op.A_adjoint(y)
    assert torch.linalg.vector_norm(resid) < 1e-4 * torch.linalg.vector_norm(op.A_adjoint(y))
    # Fully sampled, unit-norm maps: A^H A = I, so A_dagger recovers x.
    full = MultiCoilMRI(S, torch.ones(W))
    assert torch.allclose(full.A_dagger(full.A(x), max_iter=5), x, atol=1e-4)


def test_compute_norm():
    g = torch.Generator().manual_seed(5)
    S = _maps(1, 4, 8, 8, g)
    assert MultiCoilMRI(S, torch.ones(8)).compute_norm() == pytest.approx(1.0, rel=1e-3)
    assert SingleCoilMRI(torch.ones(8), (8, 8)).compute_norm() == pytest.approx(1.0, rel=1e-3)
    # Doubling the maps scales ||A||^2 by 4.
    m = _mask(8, 8, g)
    assert MultiCoilMRI(2 * S, m).compute_norm() == pytest.approx(
        4 * MultiCoilMRI(S, m).compute_norm(), rel=1e-2
    )


def test_compute_norm_is_reproducible_by_default():
    # tv and l1wav take their step from it: the same data must give the same image in every process
    # (torch seeds its global generator at random; issue 21's identical outputs under torchrun)
    g = torch.Generator().manual_seed(6)
    op = MultiCoilMRI(_maps(1, 4, 16, 16, g), _mask(16, 16, g))
    first = op.compute_norm(n_iter=3)
    torch.randn(5)  # the global generator moves on
    assert op.compute_norm(n_iter=3) == first


def test_single_coil_dagger_is_exact():
    g = torch.Generator().manual_seed(6)
    op = SingleCoilMRI(_mask(8, 8, g), (8, 8))
    x = _crandn(1, 8, 8, g=g)
    xd = op.A_dagger(op.A(x))
    assert torch.allclose(op.A(xd), op.A(x), atol=1e-5)
    assert torch.allclose(xd, op.normal(x), atol=1e-5)
