"""TV and l1-wavelet reconstructions against BART's ``pics`` on BART's analytic multi-coil phantom.

Setup (identical for both toolkits): ``bart phantom -x 128 -k -s 8`` (analytic k-space, no inverse
crime), a 2-D variable-density mask with exactly R = 4 and a 24x24 calibration block, ESPIRiT maps from
``bart ecalib -m1 -r 24`` on the undersampled data, used by BOTH reconstructions. Ground truth: the
fully sampled k-space coil-combined with those same maps, ``S^H F^H k_full``; pics runs with ``-S`` so
that its output is in the units of the data. Each toolkit gets its own small lambda grid (their data
scalings differ) and is judged at its best lambda. BART's wavelet is Daubechies-2 with random shifts,
so ours runs with ``wavelet="db2"`` and cycle spinning for a like-for-like comparison.
"""
import time

import numpy as np
import pytest
import torch

from bayesmri.bart import bart, bart_available
from bayesmri.physics import MultiCoilMRI, ifft2c
from bayesmri.physics.masks import make_mask
from bayesmri.recon import l1_wavelet_recon, tv_recon, zero_filled

from . import psnr

pytestmark = pytest.mark.skipif(
    not bart_available(), reason="BART ('bart' binary) is not installed; .ci/run installs it"
)

N = 128


def _to_ours(a: np.ndarray) -> torch.Tensor:
    """BART ``(READ, PHS1, 1, COIL)`` -> ours ``(1, C, H, W)`` (H = READ, W = PHS1)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a.reshape(N, N, -1), (2, 0, 1))))[None]


@pytest.fixture(scope="module")
def problem():
    kfull = bart(f"phantom -x {N} -k -s 8")  # (N, N, 1, 8)
    mask = make_mask("gaussian2d", (N, N), 4, num_acs=24, seed=0, sigma=0.3 * N).numpy()
    assert mask.sum() == N * N // 4
    ku = (kfull * mask[:, :, None, None]).astype(np.complex64)
    maps = bart("ecalib -m1 -r 24", ku)
    S = _to_ours(maps)
    x_true = (S.conj() * ifft2c(_to_ours(kfull))).sum(1)
    op = MultiCoilMRI(S, torch.from_numpy(mask))
    y = op.mask * _to_ours(ku)
    return dict(ku=ku, maps=maps, op=op, y=y, x_true=x_true)


def _bart_best(problem, reg, lams):
    results = {}
    for lam in lams:
        t = time.perf_counter()
        out = bart(f"pics -S -i 100 -R {reg}:{lam}", problem["ku"], problem["maps"])
        x = torch.from_numpy(np.ascontiguousarray(out.reshape(N, N)))[None]
        results[lam] = (psnr(x, problem["x_true"]), time.perf_counter() - t)
    return results


def _ours_best(problem, recon, rel_lams, **kw):
    op, y = problem["op"], problem["y"]
    scale = float(zero_filled(op, y).abs().max())  # a statistic of the measured data only
    results = {}
    for r in rel_lams:
        t = time.perf_counter()
        x = recon(op, y, r * scale, **kw)
        results[r] = (psnr(x, problem["x_true"]), time.perf_counter() - t)
    return results


def _report(name, res):
    print(f"\n{name}: " + ", ".join(f"lam={k:g}: {p:.2f} dB ({t:.2f} s)" for k, (p, t) in res.items()))
    return max(p for p, _ in res.values())


def test_tv_within_1db_of_bart_pics(problem):
    zf = psnr(zero_filled(problem["op"], problem["y"]), problem["x_true"])
    best_bart = _report("bart pics -R T:3:0", _bart_best(problem, "T:3:0", [0.001, 0.003, 0.01]))
    best_ours = _report("ours tv_recon", _ours_best(problem, tv_recon, [3e-4, 1e-3, 3e-3], max_iter=60))
    print(f"zero-filled {zf:.2f} dB")
    assert best_ours >= best_bart - 1.0
    assert best_ours > zf + 10.0


def test_l1_wavelet_within_1db_of_bart_pics(problem):
    best_bart = _report("bart pics -R W:7:0", _bart_best(problem, "W:7:0", [0.001, 0.003, 0.01]))
    best_ours = _report(
        "ours l1_wavelet_recon (db2, shifts)",
        _ours_best(problem, l1_wavelet_recon, [3e-4, 1e-3, 3e-3], wavelet="db2", max_iter=100),
    )
    assert best_ours >= best_bart - 1.0



def test_l1_wavelet_same_lambda_within_0p3db_of_bart_pics(problem):
    """Same lambda units (``pics -w 1``), a grid that brackets both optima, 200 iterations each.

    Cycle spinning makes one run a random draw (0.1-0.4 dB between shift seeds here; BART's shift
    sequence has a fixed seed), so ours is judged by its mean over three seeds. Measured: ours 44.08
    (x0.35), BART 44.03 dB (x0.35). docs/speed.md: the 0.64 dB gap reported at 320 px was an artefact of
    a grid whose smallest lambda was above both optima.
    """
    op, y = problem["op"], problem["y"]
    lam0 = 1e-3 * float(y.abs().max())
    factors = (0.25, 0.35, 0.5)
    ours, theirs = {}, {}
    for f in factors:
        ours[f] = np.mean([psnr(l1_wavelet_recon(op, y, f * lam0, wavelet="db2", max_iter=200, generator=seed),
                                problem["x_true"]) for seed in range(3)])
        xb = bart(f"pics -w 1 -S -i 200 -R W:3:0:{f * lam0:g}", problem["ku"], problem["maps"])
        theirs[f] = psnr(torch.from_numpy(np.ascontiguousarray(xb.reshape(N, N)))[None], problem["x_true"])
    print({f: (round(float(ours[f]), 2), round(theirs[f], 2)) for f in factors})
    assert max(ours.values()) >= max(theirs.values()) - 0.3
