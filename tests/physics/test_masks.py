import subprocess
import sys

import numpy as np
import pytest
import torch

from bayesmri.physics.masks import (
    MASK_PATTERNS,
    acceleration_of,
    acs_slice,
    gro_mask,
    make_mask,
    poisson_disc_mask,
    seed_from_name,
)

ONE_D = ["gro", "uniform1d", "gaussian1d", "equispaced"]
TWO_D = ["gaussian2d", "poisson"]
RANDOM = ["uniform1d", "gaussian1d", "gaussian2d", "poisson"]
SHAPES = [(64, 64), (48, 80), (96, 57)]

# Reference masks released with Wen, Ahmad & Schniter (2023), jwen307/mri_cnf
# datasets/masks/mask_accel4_size{320_gro_knee,384_gro_brain}.mat: indices of the sampled columns.
WEN_KNEE_320 = [
    0, 10, 19, 28, 37, 45, 52, 60, 67, 73, 79, 85, 91, 96, 101, 106, 110, 114, 118, 122, 125, 128, 131,
    134, 136, 139, 141, 143, 145, 147, 148, 150, 151, 152, 154, 155, 156, 157, 158, 159, 160, 161, 162,
    163, 164, 165, 166, 168, 169, 170, 172, 173, 175, 177, 179, 181, 184, 186, 189, 192, 195, 198, 202,
    206, 210, 214, 219, 224, 229, 235, 241, 247, 253, 260, 268, 275, 283, 292, 301, 310,
]
WEN_BRAIN_384 = [
    0, 10, 19, 28, 37, 46, 54, 61, 69, 76, 83, 89, 95, 101, 107, 112, 118, 122, 127, 132, 136, 140, 144,
    148, 151, 155, 158, 161, 164, 167, 170, 173, *range(176, 209), 211, 214, 217, 220, 223, 226, 229,
    233, 236, 240, 244, 248, 252, 257, 262, 266, 272, 277, 283, 289, 295, 301, 308, 315, 323, 330, 338,
    347, 356, 365, 374,
]


@pytest.mark.parametrize("pattern", list(MASK_PATTERNS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("R", [4, 8])
def test_exact_acceleration_shape_dtype_and_centred_acs(pattern, shape, R):
    H, W = shape
    num_acs = 6 if pattern in ONE_D else (6, 4)
    m = make_mask(pattern, shape, R, num_acs=num_acs, seed=3)
    assert m.dtype == torch.float32
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    n_total = W if pattern in ONE_D else H * W
    assert m.shape == ((W,) if pattern in ONE_D else (H, W))
    # exact: round(n_total / R) samples, so |n - n_total / R| <= 1/2 line (or point)
    assert int(m.sum()) == round(n_total / R)
    n_measured = n_total / acceleration_of(m, shape)
    assert abs(n_measured - n_total / R) <= 0.5  # within half a line (1-D) / half a point (2-D)
    if pattern in ONE_D:
        assert bool((m[W // 2 - 3 : W // 2 + 3] == 1).all())
    else:
        assert bool((m[H // 2 - 3 : H // 2 + 3, W // 2 - 2 : W // 2 + 2] == 1).all())


@pytest.mark.parametrize("pattern", list(MASK_PATTERNS))
def test_default_acs_is_centred_on_dc(pattern):
    H, W = 64, 64
    m = make_mask(pattern, (H, W), 4, seed=0)
    line = m if m.ndim == 1 else m[H // 2]
    assert line[W // 2] == 1  # DC of the centred FFT always sampled
    assert int(m.sum()) == round((W if m.ndim == 1 else H * W) / 4)


def test_acs_slice_is_centred_on_dc():
    for n in (8, 9, 320):
        for a in (1, 4, 5, 13):
            if a > n:
                continue
            s = acs_slice(n, a)
            idx = list(range(n))[s]
            assert len(idx) == a and n // 2 in idx
            assert abs((idx[0] + idx[-1]) / 2 - n // 2) <= 0.5


@pytest.mark.parametrize("pattern", RANDOM)
def test_seeded_masks_are_reproducible_and_seed_dependent(pattern):
    shape = (48, 64)
    a = make_mask(pattern, shape, 4, seed=11)
    b = make_mask(pattern, shape, 4, seed=11)
    c = make_mask(pattern, shape, 4, seed=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(make_mask(pattern, shape, 4, seed=g1), make_mask(pattern, shape, 4, seed=g2))


def test_gro_frames_and_equispaced_offsets_vary_with_seed():
    assert not torch.equal(gro_mask(128, 4, seed=0), gro_mask(128, 4, seed=1))
    assert torch.equal(gro_mask(128, 4), gro_mask(128, 4, seed=0))
    e0 = make_mask("equispaced", (32, 128), 4, num_acs=8, seed=0)
    e1 = make_mask("equispaced", (32, 128), 4, num_acs=8, seed=1)
    assert not torch.equal(e0, e1)


def test_gro_reproduces_wen_knee_mask():
    """R=4, 13 ACS lines, 320 columns: the CNF paper's knee mask, line for line."""
    m = make_mask("gro", (320, 320), 4, num_acs=13)
    assert np.flatnonzero(m.numpy()).tolist() == WEN_KNEE_320
    assert acceleration_of(m, (320, 320)) == 4.0
    assert bool((m[acs_slice(320, 13)] == 1).all())


def test_gro_reproduces_wen_brain_mask():
    """R=4, 32-line ACS, 384 columns with the authors' shrink factor s = 2.05."""
    m = make_mask("gro", (384, 384), 4, num_acs=32, s=2.05)
    assert np.flatnonzero(m.numpy()).tolist() == WEN_BRAIN_384


def test_gro_is_variable_density():
    m = gro_mask(320, 8)
    centre = m[160 - 20 : 160 + 20].mean()
    edge = torch.cat([m[:60], m[-60:]]).mean()
    assert centre > 3 * edge


def test_gaussian_patterns_are_denser_at_centre():
    m1 = make_mask("gaussian1d", (64, 256), 8, num_acs=0, seed=0)
    assert m1[128 - 32 : 128 + 32].mean() > 3 * torch.cat([m1[:64], m1[-64:]]).mean()
    m2 = make_mask("gaussian2d", (128, 128), 8, num_acs=0, seed=0)
    assert m2[48:80, 48:80].mean() > 3 * m2[:32].mean()


def test_equispaced_is_equispaced_outside_acs():
    m = make_mask("equispaced", (64, 200), 5, num_acs=0, seed=None)
    gaps = np.diff(np.flatnonzero(m.numpy()))
    assert int(m.sum()) == 40 and gaps.max() - gaps.min() <= 1


def test_poisson_pass_respects_variable_radius():
    """No accepted point lies inside another's (earlier) elliptical disc, and the set is maximal."""
    from bayesmri.physics.masks import _poisson_pass

    H, W = 40, 56
    yy, xx = np.mgrid[:H, :W]
    rho = np.hypot((yy - H // 2) / (H // 2), (xx - W // 2) / (W // 2))
    ry = np.maximum((1 + 3.0 * rho) * H / W, 1.0)
    rx = 1 + 3.0 * rho
    order = torch.randperm(H * W, generator=torch.Generator().manual_seed(0)).numpy()
    m = _poisson_pass(order, np.ones((H, W), bool), ry, rx)
    ys, xs = np.nonzero(m)
    dy = ys[:, None] - ys[None, :]
    dx = xs[:, None] - xs[None, :]
    q_i = (dy / ry[ys, xs][:, None]) ** 2 + (dx / rx[ys, xs][:, None]) ** 2  # in i's ellipse
    q_j = (dy / ry[ys, xs][None, :]) ** 2 + (dx / rx[ys, xs][None, :]) ** 2  # in j's ellipse
    # the earlier point's disc excludes the later one, so each pair lies outside at least one disc
    assert np.maximum(q_i, q_j)[~np.eye(len(ys), dtype=bool)].min() >= 1.0
    # maximality: every unsampled point is covered by some sampled point's disc
    cover = np.zeros((H, W), bool)
    for y, x in zip(ys, xs):
        cover |= ((yy - y) / ry[y, x]) ** 2 + ((xx - x) / rx[y, x]) ** 2 < 1
    assert cover.all()


def test_poisson_variable_density_exact_count_and_calibration():
    H, W, R, acs = 96, 96, 6, 8
    m = poisson_disc_mask((H, W), R, num_acs=acs, seed=2)
    assert int(m.sum()) == round(H * W / R)
    calib = torch.zeros(H, W, dtype=torch.bool)
    calib[acs_slice(H, acs), acs_slice(W, acs)] = True
    assert bool(m[calib].all())
    # nearest-neighbour distance grows outwards (the disc radius grows with |k|)
    ys, xs = np.nonzero((m.bool() & ~calib).numpy())
    rad = np.hypot(ys - H // 2, xs - W // 2)
    d = np.hypot(ys[:, None] - ys[None, :], xs[:, None] - xs[None, :])
    np.fill_diagonal(d, np.inf)
    nn = d.min(1)
    assert nn.min() >= 1.0
    assert np.median(nn[rad > 34]) > 1.5 * np.median(nn[rad < 16])
    # density: the centre is sampled more densely than the periphery
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    r = torch.hypot((yy - H // 2).float(), (xx - W // 2).float())
    assert m[(r > acs) & (r < 20)].mean() > 2 * m[(r > 35) & (r < 48)].mean()
    # corners (rho >= 1) are cropped as in sigpy
    assert m[0, 0] == 0 and m[-1, -1] == 0


def test_poisson_has_no_close_pairs_unlike_random():
    """Blue noise: at equal density, uniform random sampling has adjacent pairs, Poisson disc does not."""
    H = W = 64
    m = poisson_disc_mask((H, W), 3, num_acs=0, seed=0, crop_corner=False)
    ys, xs = np.nonzero(m.numpy())
    # slope 0 is radius 1 everywhere; any accepted slope > 0 makes the radius > 1 off-centre, so
    # neighbours at distance 1 can only occur right at the centre
    adjacent = (np.abs(ys[:, None] - ys[None, :]) + np.abs(xs[:, None] - xs[None, :])) == 1
    near_centre = np.hypot(ys - H // 2, xs - W // 2) < 8
    assert not adjacent[~near_centre].any()
    rnd = make_mask("gaussian2d", (H, W), 3, num_acs=0, seed=0, sigma=1e6)  # uniform density
    ry, rx = np.nonzero(rnd.numpy())
    adj_r = (np.abs(ry[:, None] - ry[None, :]) + np.abs(rx[:, None] - rx[None, :])) == 1
    assert adj_r.any()


def test_seed_from_name_deterministic_across_processes():
    s1 = seed_from_name("/data/knee/file1000001.h5", 17)
    assert s1 == seed_from_name("other/dir/file1000001.h5", 17)  # directory does not matter
    assert s1 != seed_from_name("file1000001.h5", 18)
    assert s1 != seed_from_name("file1000002.h5", 17)
    assert 0 <= s1 < 2**63
    code = "from bayesmri.physics.masks import seed_from_name; print(seed_from_name('file1000001.h5', 17))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert int(out) == s1
    m1 = make_mask("uniform1d", (32, 64), 4, seed=seed_from_name("a.h5", 3))
    m2 = make_mask("uniform1d", (32, 64), 4, seed=seed_from_name("a.h5", 3))
    assert torch.equal(m1, m2)


def test_acceleration_of_broadcasting_and_batches():
    assert acceleration_of(torch.tensor([1.0, 0, 0, 1]), (3, 4)) == 2.0
    m = torch.zeros(2, 4, 4)
    m[0, :, :2] = 1
    m[1, 0, 0] = 1
    R = acceleration_of(m, (4, 4))
    assert R.tolist() == [2.0, 16.0]
    with pytest.raises(ValueError, match="broadcast"):
        acceleration_of(torch.ones(5), (4, 4))
    with pytest.raises(ValueError, match="no sampled"):
        acceleration_of(torch.zeros(4), (4, 4))


def test_bad_requests_raise_clear_errors():
    with pytest.raises(ValueError, match="valid patterns: gro, uniform1d"):
        make_mask("radial", (32, 32), 4)
    with pytest.raises(ValueError, match="acceleration"):
        make_mask("uniform1d", (32, 32), 0.5)
    with pytest.raises(ValueError, match="ACS lines exceed"):
        make_mask("gro", (32, 64), 8, num_acs=10)
    with pytest.raises(ValueError, match="exceeds"):
        make_mask("poisson", (32, 32), 8, num_acs=16)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        make_mask("gaussian2d", (32,), 4)
    with pytest.raises(ValueError, match="no sampled"):
        make_mask("equispaced", (8, 8), 100)
    with pytest.raises(ValueError, match="4/pi"):
        make_mask("poisson", (16, 16), 1.1, num_acs=0)
    with pytest.raises(TypeError, match="seed"):
        make_mask("uniform1d", (16, 16), 2, seed="abc")


def test_poisson_with_a_calibration_block_that_fills_the_budget_is_that_block():
    # 24x24 at R=4 allows 144 points: a 12x12 block holds them all (was a ZeroDivisionError)
    from bayesmri.physics.masks import acceleration_of, make_mask

    m = make_mask("poisson", (24, 24), 4, num_acs=12, seed=0)
    assert int(m.sum()) == 144 and float(acceleration_of(m, (24, 24))) == 4.0
    assert bool(m[6:18, 6:18].all())


def test_compiled_poisson_pass_equals_the_python_reference():
    """The numba pass makes exactly the choices of the pure Python reference (order, radii, allowed)."""
    from bayesmri.physics.masks import _poisson_pass, _poisson_pass_py

    rng = np.random.default_rng(1)
    H, W = 48, 40
    order = rng.permutation(H * W)
    allowed = rng.random((H, W)) > 0.2
    ry, rx = 1 + 3 * rng.random((H, W)), 1 + 2 * rng.random((H, W))
    np.testing.assert_array_equal(_poisson_pass(order, allowed, ry, rx), _poisson_pass_py(order, allowed, ry, rx))


def test_poisson_320_exact_count_and_min_distance():
    """At the real size (320x320, R=8): exact count, seeded determinism, and blue noise: the radius is
    1 only where rho = 0 (the calibration box and its one-pixel rim) and grows outwards, so a pair at
    distance <= 1 has one sample there, and no two samples in the outer half are closer than 2 pixels."""
    H = W = 320
    m = poisson_disc_mask((H, W), 8, num_acs=24, seed=3).numpy().astype(bool)
    assert int(m.sum()) == round(H * W / 8)
    assert poisson_disc_mask((H, W), 8, num_acs=24, seed=3).equal(torch.from_numpy(m.astype(np.float32)))
    calib = np.zeros((H, W), bool)
    calib[acs_slice(H, 24), acs_slice(W, 24)] = True
    ys, xs = np.nonzero(m & ~calib)
    from scipy.spatial import cKDTree

    pts = np.stack([ys, xs], 1)
    pairs = np.array(sorted(cKDTree(pts).query_pairs(r=1.0 + 1e-9)))
    rim = (np.abs(ys - H // 2) <= 12) & (np.abs(xs - W // 2) <= 12)
    assert len(pairs) == 0 or rim[pairs].any(1).all()  # the earlier point of a pair has radius 1
    outer = np.hypot(ys - H // 2, xs - W // 2) > H // 4
    d, _ = cKDTree(pts[outer]).query(pts[outer], k=2)
    assert d[:, 1].min() >= 2.0
