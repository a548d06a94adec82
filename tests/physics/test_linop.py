"""Fast real-view reductions and the CG warm-start residual against their plain definitions."""
import torch

from bayesmri.physics.linop import cdot, conjugate_gradient, rdot, sqnorm
from bayesmri.recon.prox import finite_difference, finite_difference_adjoint, finite_difference_normal


def _c(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64))


def test_rdot_and_sqnorm_match_cdot_and_vector_norm():
    a, b = _c(3, 5, 7), _c(3, 5, 7, seed=1)
    torch.testing.assert_close(rdot(a, b), cdot(a, b).real)
    torch.testing.assert_close(rdot(a.conj(), b), cdot(a.conj(), b).real)  # lazily conjugated input
    torch.testing.assert_close(sqnorm(a), torch.linalg.vector_norm(a.flatten(1), dim=1) ** 2)
    torch.testing.assert_close(sqnorm(a, 0), torch.linalg.vector_norm(a) ** 2)
    r = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(sqnorm(r), (r * r).sum(1))


def test_finite_difference_normal_is_dh_d():
    x = _c(2, 9, 13)
    torch.testing.assert_close(finite_difference_normal(x), finite_difference_adjoint(finite_difference(x)))


def test_cg_with_the_known_residual_equals_cg_without():
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(2, 6, 6, generator=g, dtype=torch.float64)
    M = Q @ Q.transpose(1, 2) + 6 * torch.eye(6, dtype=torch.float64)

    def normal(v):
        return (M @ v.unsqueeze(-1)).squeeze(-1)

    rhs = torch.randn(2, 6, generator=g, dtype=torch.float64)
    x0 = torch.randn(2, 6, generator=g, dtype=torch.float64)
    a = conjugate_gradient(normal, rhs, x0, max_iter=3, tol=0)
    b = conjugate_gradient(normal, rhs, x0, max_iter=3, tol=0, r0=rhs - normal(x0))
    torch.testing.assert_close(a, b)
    exact = torch.linalg.solve(M, rhs.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(conjugate_gradient(normal, rhs, x0, max_iter=6, tol=0, r0=rhs - normal(x0)), exact)
