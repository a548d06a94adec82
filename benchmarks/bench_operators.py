"""Operator benchmark: Cartesian SENSE vs bare FFTs, NUFFT backends, and recon vs ``bart pics``.

Run (single thread, so that numbers are comparable on a shared machine)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_operators.py [--sizes 128 320] [--coils 8]
        [--repeats 7] [--no-backends] [--no-recon] [--recon-iters 30]

Tables:

1. ``MultiCoilMRI`` (8 coils, R=4 GRO-like 1-D mask) ``A``, ``A_adjoint``, ``normal`` against the bare
   ``torch.fft.fft2/ifft2`` calls they contain (same shapes, no shifts, no maps): ratio target <= 1.3;
   and the composed ``A.H``, ``A.H @ A``, ``A.H @ A + lam I``, which must time as the methods they call.
2. NUFFT forward/adjoint on a fully covering golden-angle radial trajectory (``ceil(pi/2 N)`` spokes of
   ``N`` samples) for bayesmri's ``NonCartesianMRI`` (finufft), finufft through mri-nufft, and
   torchkbnufft, with the relative error against a direct NUDFT on 400 random samples.
3. ``tv_recon`` / ``l1_wavelet_recon`` against ``bart pics -R T`` / ``-R W`` with the same iterations.
   Not like for like (BART scales the data unless ``-w 1``, and its ADMM ``-i K`` counts CG iterations,
   not ADMM iterations): ``benchmarks/bench_speed.py`` is the comparison to quote (docs/speed.md).

Timings are medians of ``--repeats`` runs after one warm-up run; ratios are against references timed
in the same process.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesmri.physics import Identity, MultiCoilMRI  # noqa: E402
from bayesmri.physics.nufft import NonCartesianMRI  # noqa: E402
from bayesmri.physics.trajectories import radial_trajectory  # noqa: E402


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def crandn(*shape, g):
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def coil_maps(C, N, g):
    s = crandn(1, C, N, N, g=g)
    return s / torch.linalg.vector_norm(s, dim=1, keepdim=True)


def line_mask(N, R=4, acs=16):
    m = torch.zeros(N)
    m[::R] = 1
    m[N // 2 - acs // 2 : N // 2 + acs // 2] = 1
    return m


def ms(t):
    return f"{1e3 * t:9.2f}"


# ----------------------------------------------------------------------------------------------
def bench_cartesian(sizes, C, repeats):
    print(f"\n## Cartesian MultiCoilMRI, {C} coils, 1 thread: time [ms] vs bare torch.fft calls")
    print(f"{'N':>5} {'op':>10} {'bayesmri':>9} {'bare fft':>9} {'ratio':>6}")
    g = torch.Generator().manual_seed(0)
    for N in sizes:
        S = coil_maps(C, N, g)
        op = MultiCoilMRI(S, line_mask(N))
        gram, tikh = op.H @ op, op.H @ op + 1e-2 * Identity((N, N))
        x = crandn(1, N, N, g=g)
        y = op.A(x)
        z = crandn(1, C, N, N, g=g)
        bare_f = lambda: torch.fft.fft2(z, norm="ortho")  # noqa: E731
        bare_i = lambda: torch.fft.ifft2(z, norm="ortho")  # noqa: E731
        t_f = timeit(bare_f, repeats)
        t_i = timeit(bare_i, repeats)
        for name, fn, ref in [
            ("A", lambda: op.A(x), t_f),
            ("A_adjoint", lambda: op.A_adjoint(y), t_i),
            ("normal", lambda: op.normal(x), t_f + t_i),
            # composed forms (physics.linop algebra): must time as the methods they call
            ("A.H.A", lambda: op.H.A(y), t_i),
            ("(A.H@A).A", lambda: gram.A(x), t_f + t_i),
            ("+lam I", lambda: tikh.A(x), t_f + t_i),
        ]:
            t = timeit(fn, repeats)
            print(f"{N:>5} {name:>10} {ms(t)} {ms(ref)} {t / ref:6.2f}")


# ----------------------------------------------------------------------------------------------
def _nudft_subset(traj, z, idx):
    """Exact NUDFT of coil images ``z (C, H, W)`` at samples ``idx`` (float64, same scaling as ours)."""
    H, W = z.shape[-2:]
    r = torch.stack(
        torch.meshgrid(torch.arange(H) - H // 2, torch.arange(W) - W // 2, indexing="ij"), -1
    ).reshape(-1, 2).double()
    E = torch.exp(-2j * math.pi * (traj[idx].double() @ r.T)) / math.sqrt(H * W)
    return z.reshape(z.shape[0], -1).to(torch.complex128) @ E.T


def bench_nufft(sizes, C, repeats, backends=True):
    print(f"\n## NUFFT, {C} coils, golden-angle radial ceil(pi/2 N) x N, 1 thread: time [ms], rel. error vs NUDFT")
    print(f"{'N':>5} {'backend':>26} {'forward':>9} {'adjoint':>9} {'fwd err':>9} {'autograd':>9}")
    g = torch.Generator().manual_seed(1)
    for N in sizes:
        traj = radial_trajectory(int(math.ceil(math.pi / 2 * N)), N)
        K = traj.shape[0]
        S = coil_maps(C, N, g)
        x = crandn(1, N, N, g=g)
        idx = torch.randperm(K, generator=g)[:400]
        ref = _nudft_subset(traj, (S * x)[0], idx)
        y = crandn(1, C, K, g=g)
        rows = []

        op = NonCartesianMRI(traj, (N, N), coil_maps=S, nthreads=1)
        yo = op.A(x)
        rows.append(("bayesmri (finufft)", lambda: op.A(x), lambda: op.A_adjoint(y), yo[0][:, idx], "yes"))
        if backends:
            rows += _other_backends(traj, N, C, S, x, y, idx)
        for name, f, a, yk, ag in rows:
            err = float(torch.linalg.vector_norm(yk.to(torch.complex128) - ref) / torch.linalg.vector_norm(ref))
            print(f"{N:>5} {name:>26} {ms(timeit(f, repeats))} {ms(timeit(a, repeats))} {err:9.1e} {ag:>9}")


def _other_backends(traj, N, C, S, x, y, idx):
    rows = []
    scale = 1.0 / N
    try:  # mri-nufft over finufft: same library, numpy interface, smaps handled by mri-nufft
        from mrinufft import get_operator

        # mri-nufft's image grid is centred like ours; its samples are in [-0.5, 0.5) too.
        op = get_operator("finufft")(
            traj.numpy().astype(np.float32), (N, N), n_coils=C, smaps=S[0].numpy(), density=False,
            eps=1e-6, nthreads=1, upsampfac=2.0,
        )
        xn, yn = x[0].numpy(), y[0].numpy()
        # mri-nufft divides by norm_factor = sqrt(2^d H W) (its oversampled grid); we use sqrt(H W).
        yk = torch.from_numpy(np.asarray(op.op(xn)).reshape(C, -1) * (op.norm_factor * scale))
        rows.append(("mri-nufft (finufft)", lambda: op.op(xn), lambda: op.adj_op(yn), yk[:, idx], "wrapper"))
    except Exception as e:  # pragma: no cover - optional
        print(f"   mri-nufft unavailable: {type(e).__name__}: {e}")
    try:
        import torchkbnufft as tkbn

        # torchkbnufft: omega in radians (2, K); its image grid is centred at N//2 as well.
        omega = (2 * math.pi * traj).T.contiguous()
        fwd = tkbn.KbNufft(im_size=(N, N))
        adj = tkbn.KbNufftAdjoint(im_size=(N, N))
        xs = x[:, None]  # (1, 1, N, N)
        smaps = S
        # norm="ortho" divides by sqrt(prod(grid_size)) = 2N (2x oversampled grid), ours by N.
        yk = 2 * fwd(xs, omega, smaps=smaps, norm="ortho")[0]
        rows.append((
            "torchkbnufft (table)",
            lambda: fwd(xs, omega, smaps=smaps, norm="ortho"),
            lambda: adj(y, omega, smaps=smaps, norm="ortho"),
            yk[:, idx], "yes",
        ))
        mats = tkbn.calc_tensor_spmatrix(omega, im_size=(N, N))
        rows.append((
            "torchkbnufft (sparse mat)",
            lambda: fwd(xs, omega, interp_mats=mats, smaps=smaps, norm="ortho"),
            lambda: adj(y, omega, interp_mats=mats, smaps=smaps, norm="ortho"),
            2 * fwd(xs, omega, interp_mats=mats, smaps=smaps, norm="ortho")[0][:, idx], "yes",
        ))
    except Exception as e:  # pragma: no cover - optional
        print(f"   torchkbnufft unavailable: {type(e).__name__}: {e}")
    return rows


# ----------------------------------------------------------------------------------------------
def bench_recon(sizes, C, iters, repeats):
    print(f"\n## Reconstruction, {C} coils, R=4 lines, {iters} iterations: time [s]")
    try:
        from bayesmri.recon import l1_wavelet_recon, tv_recon
    except ImportError:
        tv_recon = l1_wavelet_recon = None
    from bayesmri.bart import bart, bart_available

    have_bart = bart_available()
    print(f"{'N':>5} {'method':>12} {'bayesmri':>9} {'bart pics':>9} {'ratio':>6}")
    g = torch.Generator().manual_seed(2)
    lam = 0.01
    for N in sizes:
        S = coil_maps(C, N, g)
        mask = line_mask(N)
        op = MultiCoilMRI(S, mask)
        yy, xx = torch.meshgrid(torch.arange(N) - N / 2, torch.arange(N) - N / 2, indexing="ij")
        x = ((yy**2 / (0.4 * N) ** 2 + xx**2 / (0.3 * N) ** 2) < 1).to(torch.complex64)[None]
        y = op.A(x)
        k_b = np.transpose(y[0].numpy(), (1, 2, 0))[:, :, None, :]
        s_b = np.transpose(S[0].numpy(), (1, 2, 0))[:, :, None, :]
        for name, fn, reg in [("TV", tv_recon, f"T:3:0:{lam}"), ("l1-wavelet", l1_wavelet_recon, f"W:7:0:{lam}")]:
            t_ours = "      n/a"
            if fn is not None:
                try:
                    t_ours_v = timeit(lambda: fn(op, y, lam, max_iter=iters), repeats=max(1, repeats // 3))
                    t_ours = f"{t_ours_v:9.3f}"
                except Exception as e:  # the recon module may still be in flux
                    t_ours_v = None
                    t_ours = "      n/a"
                    print(f"   {name}: {type(e).__name__}: {e}")
            t_bart = "      n/a"
            t_bart_v = None
            if have_bart:
                t_bart_v = timeit(lambda: bart(f"pics -S -i {iters} -R {reg}", k_b, s_b), repeats=max(1, repeats // 3))
                t_bart = f"{t_bart_v:9.3f}"
            ratio = (
                f"{float(t_ours) / t_bart_v:6.2f}" if t_bart_v and t_ours.strip() != "n/a" else "   n/a"
            )
            print(f"{N:>5} {name:>12} {t_ours} {t_bart} {ratio}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 320])
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--recon-iters", type=int, default=30)
    p.add_argument("--no-backends", action="store_true", help="only bayesmri's NUFFT")
    p.add_argument("--no-recon", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench_cartesian(a.sizes, a.coils, a.repeats)
    bench_nufft(a.sizes, a.coils, a.repeats, backends=not a.no_backends)
    if not a.no_recon:
        bench_recon(a.sizes, a.coils, a.recon_iters, a.repeats)


if __name__ == "__main__":
    main()
