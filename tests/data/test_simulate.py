"""Acquisition simulator, typed sample and SimulatedBrainDataset."""
import math

import pytest
import torch

from bayesmri.data import (MRISample, SimulatedBrainDataset, collate_samples, load_slices,
                           simulate_acquisition)
from bayesmri.physics import fft2c
from bayesmri.physics.masks import make_mask

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mag():
    return load_slices("test", size=64, indices=[60])[0]


def test_same_seed_same_kspace_different_seed_differs(mag):
    mask = make_mask("gro", (64, 64), 4, num_acs=8)
    a = simulate_acquisition(mag, mask=mask, snr_db=25, seed=3)
    b = simulate_acquisition(mag, mask=mask, snr_db=25, seed=3)
    c = simulate_acquisition(mag, mask=mask, snr_db=25, seed=4)
    assert torch.equal(a.kspace, b.kspace)
    assert not torch.allclose(a.kspace, c.kspace)


def test_dataset_deterministic_per_split_slice_seed():
    kw = dict(size=64, pattern="gaussian2d", acceleration=4, snr_db=30, seed=7)
    d1, d2 = SimulatedBrainDataset("val", **kw), SimulatedBrainDataset("val", **kw)
    s1, s2 = d1[5], d2[5]
    assert torch.equal(s1.kspace, s2.kspace) and torch.equal(s1.mask, s2.mask)
    assert s1.metadata["split"] == "val" and s1.metadata["slice"] == 5
    assert not torch.equal(d1[6].mask, s1.mask)  # per-slice random masks
    other_seed = SimulatedBrainDataset("val", **{**kw, "seed": 8})[5]
    assert not torch.equal(other_seed.kspace, s1.kspace)
    # a subset by indices reproduces the same sample
    assert torch.equal(SimulatedBrainDataset("val", indices=[5], **kw)[0].kspace, s1.kspace)


@pytest.mark.parametrize("snr_db", [10.0, 25.0])
def test_snr_within_5_percent(mag, snr_db):
    s = simulate_acquisition(mag, snr_db=snr_db, seed=1, normalise=False)  # fully sampled
    clean = fft2c(s.coil_images)
    noise = s.kspace - clean
    signal_power = float((clean.abs() ** 2).double().mean())
    noise_power = float((noise.abs() ** 2).double().mean())
    measured = signal_power / noise_power
    assert abs(measured / 10 ** (snr_db / 10) - 1) < 0.05
    assert abs(noise_power / s.noise_sigma**2 - 1) < 0.05
    # real and imaginary parts carry half the power each (circular complex Gaussian)
    assert abs(float(noise.real.pow(2).mean() / noise.imag.pow(2).mean()) - 1) < 0.05


def test_normalisation_and_unscale(mag):
    mask = make_mask("gaussian1d", (64, 64), 4, num_acs=8, seed=0)
    s = simulate_acquisition(mag, mask=mask, snr_db=30, seed=0)
    assert abs(float(torch.quantile(s.zero_filled_rss().flatten(), 0.95)) - 1) < 1e-5
    # scale is computed from measured data only; unscaling returns the input magnitude
    assert torch.allclose(s.unscale(s.target).abs(), mag, atol=1e-5)
    # off-mask k-space is exactly zero (full grid kept, fastMRI convention)
    assert float(s.kspace[..., mask == 0].abs().max()) == 0.0


def test_true_maps_normalised_and_forward_consistent(mag):
    mask = make_mask("gro", (64, 64), 3, num_acs=12)
    s = simulate_acquisition(mag, mask=mask, seed=2)  # noise-free
    assert s.noise_sigma == 0.0
    obj = s.target.abs() > 0.05
    S = s.maps("true")
    assert torch.allclose((S.abs() ** 2).sum(0)[obj], torch.ones(int(obj.sum())), atol=1e-5)
    op = s.operator("true")
    assert torch.allclose(op.A(s.target[None])[0], s.kspace, atol=1e-5)
    # the phase is smooth but present
    ph = torch.angle(s.target)[obj]
    assert float(ph.std()) > 0.05


def test_espirit_maps_lazy_and_normalised(mag):
    mask = make_mask("gro", (64, 64), 3, num_acs=12)
    s = simulate_acquisition(mag, mask=mask, seed=2, snr_db=40, num_acs=12)
    assert not s.has_espirit
    S = s.maps("espirit")
    assert s.has_espirit and S.shape == (8, 64, 64)
    obj = s.target.abs() > 0.2
    n = (S.abs() ** 2).sum(0)[obj]
    assert float((n - 1).abs().max()) < 1e-3
    # ESPIRiT maps agree with the true maps up to a per-pixel phase: |<S_true, S_esp>| ~ 1
    overlap = (s.maps_true.conj() * S).sum(0).abs()[obj]
    assert float(overlap.median()) > 0.95


def test_radial_sample_forward_consistent():
    ds = SimulatedBrainDataset("test", size=32, trajectory="radial", acceleration=2, snr_db=None,
                               indices=[60])
    s = ds[0]
    assert not s.is_cartesian and s.kspace.shape == (8, s.trajectory.shape[0])
    op = s.operator("true")
    assert torch.allclose(op.A(s.target[None])[0], s.kspace, atol=1e-4)
    assert abs(float(torch.quantile(s.zero_filled_rss().flatten(), 0.95)) - 1) < 1e-4


def test_collate_and_errors(mag):
    ds = SimulatedBrainDataset("test", size=32, pattern="uniform1d", acceleration=4, indices=[50, 60, 70])
    b = collate_samples([ds[i] for i in range(3)])
    assert b["kspace"].shape == (3, 8, 32, 32) and b["mask"].shape == (3, 1, 1, 32)
    assert b["target"].shape == (3, 32, 32) and b["scale"].shape == (3,)
    assert "maps_espirit" not in b  # not computed, not forced
    with pytest.raises(ValueError, match="either mask or trajectory"):
        simulate_acquisition(mag, mask=torch.ones(64), trajectory=torch.zeros(10, 2))
    with pytest.raises(TypeError, match="real"):
        simulate_acquisition(mag.to(torch.complex64))
    with pytest.raises(ValueError, match="mask must have shape"):
        simulate_acquisition(mag, mask=torch.ones(32))
    with pytest.raises(ValueError, match="unknown mask pattern"):
        SimulatedBrainDataset("test", size=32, pattern="spiralish")
    with pytest.raises(ValueError, match="unknown split"):
        SimulatedBrainDataset("nope")
    with pytest.raises(ValueError, match="exactly one of mask"):
        MRISample(kspace=torch.zeros(1, 4, 4, dtype=torch.complex64), img_shape=(4, 4))
