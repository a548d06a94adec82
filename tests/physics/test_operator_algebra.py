"""The operator algebra of ``bayesmri.physics.linop``: every composed form is a correct linear operator
(adjointness against random vectors, agreement with the composition of the parts) and the one CG solves."""
import pytest
import torch

from bayesmri.physics import (Adjoint, DenseOperator, Diagonal, Identity, LinearOperator, MultiCoilMRI, Normal,
                              NonCartesianMRI, PhaseModulated, Product, RealInput, Scaled, SingleCoilMRI, Sum,
                              birdcage_maps, conjugate_gradient, make_mask, radial_trajectory)
from bayesmri.physics.linop import cdot
from bayesmri.physics.radon import ParallelBeamRadon

H = W = 16


def _c(*shape, seed=0, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(*shape, generator=g, dtype=real), torch.randn(*shape, generator=g, dtype=real))


def _sense(dtype=torch.complex64):
    maps = birdcage_maps((4, H, W))[None].to(dtype)
    return MultiCoilMRI(maps, make_mask("gro", (H, W), 4, seed=0))


def _dense(m, n, seed):
    return DenseOperator(_c(m, n, seed=seed))


def _rel_adjoint_error(op: LinearOperator, seed=0) -> float:
    g = torch.Generator().manual_seed(seed)
    x, y = op.random_domain(g), op.random_range(g)
    lhs, rhs = cdot(op.A(x), y, 0), cdot(x, op.A_adjoint(y), 0)
    if not (op.dtype.is_complex and op.range_dtype.is_complex):
        lhs, rhs = lhs.real, rhs.real
    return float(abs(lhs - rhs) / (torch.linalg.vector_norm(op.A(x)) * torch.linalg.vector_norm(y)))


def _forms():
    """(name, composed operator, reference function x -> A x) for every composed form."""
    A, B, C = _dense(5, 4, 1), _dense(4, 3, 2), _dense(5, 4, 3)
    S = _sense()
    phase = torch.polar(torch.ones(H, W), torch.linspace(0, 3, H * W).reshape(H, W)).to(torch.complex64)
    nufft = NonCartesianMRI(radial_trajectory(8, 24), (H, W), coil_maps=birdcage_maps((2, H, W))[None].to(torch.complex64))
    radon = ParallelBeamRadon(12, 6, dtype=torch.float64)
    return [
        ("product", A @ B, lambda x: A.A(B.A(x))),
        ("adjoint", A.H, lambda y: A.A_adjoint(y)),
        ("adjoint of product", (A @ B).H, lambda y: B.A_adjoint(A.A_adjoint(y))),
        ("sum", A + C, lambda x: A.A(x) + C.A(x)),
        ("difference", A - C, lambda x: A.A(x) - C.A(x)),
        ("complex scalar", (2 - 1j) * A, lambda x: (2 - 1j) * A.A(x)),
        ("right scalar and division", A * 3 / 2, lambda x: 1.5 * A.A(x)),
        ("negation", -A, lambda x: -A.A(x)),
        ("normal", A.H @ A, lambda x: A.A_adjoint(A.A(x))),
        ("tikhonov", A.H @ A + 0.3 * Identity((4,), torch.complex128), lambda x: A.A_adjoint(A.A(x)) + 0.3 * x),
        ("three factors", A @ B @ DenseOperator(_c(3, 3, seed=4)), lambda x: A.A(B.A(x @ _c(3, 3, seed=4).T))),
        ("sense normal", S.H @ S, lambda x: S.A_adjoint(S.A(x))),
        ("sense times diagonal", S @ Diagonal(phase, (H, W)), lambda x: S.A(phase * x)),
        ("phase modulated", PhaseModulated(S, phase), lambda x: S.A(phase * x)),
        ("sense sum", S + 0.5j * S, lambda x: (1 + 0.5j) * S.A(x)),
        ("real input of product", RealInput(S @ Diagonal(phase, (H, W))), lambda x: S.A(phase * x.to(torch.complex64))),
        ("nufft composed", 2 * nufft @ Diagonal(phase, (H, W)), lambda x: 2 * nufft.A(phase * x)),
        ("single coil difference", SingleCoilMRI(torch.ones(W), (H, W)) - SingleCoilMRI(make_mask("uniform1d", (H, W), 2), (H, W)),
         None),
        ("real radon product", radon.H @ radon - 0.1 * Identity((12, 12), torch.float64), None),
    ]


@pytest.mark.parametrize("name,op,ref", _forms(), ids=[f[0] for f in _forms()])
def test_composed_form_is_adjoint_and_equals_the_composition(name, op, ref):
    tol = 1e-12 if op.dtype == torch.complex128 or op.dtype == torch.float64 else 2e-6
    assert _rel_adjoint_error(op) < tol
    assert op.adjointness_test() < tol
    if ref is not None:
        x = op.random_domain(torch.Generator().manual_seed(5), batch=3 if op.batch_size == 1 else None)
        torch.testing.assert_close(op.A(x), ref(x), rtol=tol * 10, atol=tol * 10)
        torch.testing.assert_close(op @ x, op.A(x))
    # the normal operator (each class's own or the composed one) is A^H A
    x = op.random_domain(torch.Generator().manual_seed(6))
    torch.testing.assert_close(op.normal(x), op.A_adjoint(op.A(x)), rtol=tol * 100, atol=tol * 100)


def test_adjoint_of_adjoint_is_the_operator_and_normal_keeps_the_fast_path():
    S = _sense()
    assert S.H.H is S
    assert isinstance(S.H, Adjoint) and isinstance(S.H @ S, Normal)
    N = S.H @ S
    assert N.H is N
    calls = []
    S.normal = lambda x, f=S.normal: calls.append(1) or f(x)  # instance attribute: counts MultiCoilMRI.normal
    x = S.random_domain(0)
    N.A(x)
    (S @ Identity((H, W))).normal(x)
    (3 * S).normal(x)
    assert len(calls) == 3  # the subclass's normal, not A_adjoint(A(x)), in every composed form


def test_scaled_scales_the_norm_and_nested_scalars_collapse():
    A = _dense(6, 4, 0)
    s = (2 * (3 * A))
    assert isinstance(s, Scaled) and s.scale == 6 and s.op is A
    assert abs(((1 + 1j) * A).compute_norm() - 2 * A.compute_norm()) < 1e-8 * A.compute_norm()
    import numpy as np

    for a in (np.float32(2.5), torch.tensor(2.5), np.complex64(1j)):
        torch.testing.assert_close((a * A).A(A.random_domain(0)), complex(a) * A.A(A.random_domain(0)))
    s3 = A + A + A
    assert isinstance(s3, Sum) and len(s3.parts) == 3


def test_shape_mismatch_and_bad_operands_give_one_clear_error():
    A, B = _dense(5, 4, 1), _dense(3, 2, 2)
    with pytest.raises(ValueError, match=r"cannot compose A @ B: A is DenseOperator \(4,\) -> \(5,\) but B is DenseOperator \(2,\) -> \(3,\)"):
        A @ B
    with pytest.raises(ValueError, match="cannot add"):
        A + _dense(5, 3, 0)
    with pytest.raises(TypeError, match="use A @ B"):
        A * B
    with pytest.raises(TypeError, match="scaled by a number"):
        A * "2"
    with pytest.raises(ValueError, match="does not broadcast"):
        Diagonal(torch.ones(3, 3), (4, 4))
    maps = birdcage_maps((2, H, W))[None].to(torch.complex64)
    op2 = MultiCoilMRI(torch.cat([maps, maps]), torch.ones(W))
    op3 = MultiCoilMRI(torch.cat([maps, maps, maps]), torch.ones(W))
    with pytest.raises(ValueError, match="batch sizes 2, 3"):
        op2 + op3


def test_conjugate_gradient_solves_a_known_spd_system_like_torch_solve():
    g = torch.Generator().manual_seed(0)
    Q = _c(3, 12, 12, seed=1)
    M = Q @ Q.conj().transpose(1, 2) + 0.5 * torch.eye(12, dtype=torch.complex128)  # HPD, batched
    rhs = _c(3, 12, seed=2)
    exact = torch.linalg.solve(M, rhs.unsqueeze(-1)).squeeze(-1)
    x = conjugate_gradient(lambda v: (M @ v.unsqueeze(-1)).squeeze(-1), rhs, max_iter=100, tol=1e-12)
    torch.testing.assert_close(x, exact, rtol=1e-8, atol=1e-8)
    # an operator works as the normal map: Tikhonov least squares against the closed form
    A = _dense(8, 5, 3)
    lam = 0.2
    y = _c(2, 8, seed=4)
    x = conjugate_gradient(A.H @ A + lam * Identity((5,), torch.complex128), A.H @ y, max_iter=50, tol=1e-12)
    Am = A.matrix
    ref = torch.linalg.solve(Am.conj().T @ Am + lam * torch.eye(5, dtype=Am.dtype), (y @ Am.conj()).T).T
    torch.testing.assert_close(x, ref, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(A.A_dagger(y, lam=lam, tol=1e-12), ref, rtol=1e-8, atol=1e-8)
    _ = g


def test_conjugate_gradient_callback_progress_and_residual():
    A = _dense(8, 5, 3)
    y = _c(2, 8, seed=4)
    seen = []
    x, r = conjugate_gradient(A.H @ A, A.H @ y, max_iter=4, tol=0, callback=lambda it, x: seen.append(it),
                              progress="test", return_residual=True)
    assert seen == [0, 1, 2, 3]
    torch.testing.assert_close(r, A.H @ y - (A.H @ A) @ x, rtol=1e-9, atol=1e-9)


def test_composite_moves_its_parts_to_a_device():
    S = _sense()
    op = PhaseModulated(S, torch.ones(H, W, dtype=torch.complex64)) + S
    assert op.to("cpu") is op and S.device == torch.device("cpu")


def test_coil_fourier_operators_are_adjoint_and_match_sense():
    from bayesmri.physics import CartesianCoilFourier, NonCartesianCoilFourier

    S = _sense()
    F = CartesianCoilFourier(S.mask, (H, W), ncoils=4)  # the SENSE operator's own 4-D mask
    assert F.adjointness_test() < 2e-6
    x = S.random_domain(0, batch=2)
    torch.testing.assert_close(F.A(S.maps * x[:, None]), S.A(x))  # F(S_c x) = SENSE, an independent FFT path
    torch.testing.assert_close((S.maps.conj() * F.A_adjoint(S.A(x))).sum(1), S.normal(x))
    Fn = NonCartesianCoilFourier(radial_trajectory(8, 24), (H, W), weighting="none", ncoils=3)
    assert Fn.adjointness_test() < 2e-6
