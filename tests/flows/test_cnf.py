import pytest
import torch

from bayesmri.flows.cnf import (ConditionalNF, channels_to_complex, cnf_log_posterior, cnf_map, cnf_sample,
                                complex_to_channels, zero_filled_and_scale)
from bayesmri.physics import CoilImageMRI, make_mask
from bayesmri.physics.fft import fft2c, ifft2c
from tests.test_uncertainty import check_summaries

TINY = dict(ncoils=2, img_size=(8, 8), num_levels=3, num_blocks=1, unet_chans=4, unet_pools=2, cond_chans=3,
            hidden=6, clamp=2.0)


def _randomise(model, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("levels"):  # zero-initialised couplings would make the flow trivial
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return model.eval()


def _measurement(C=2, H=8, W=8, R=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, C, H, W, dtype=torch.complex64, generator=g)
    mask = make_mask("gro", (H, W), R, num_acs=2)
    return x, mask * fft2c(x), mask


def test_channel_layout_roundtrip():
    x = torch.randn(2, 3, 4, 5, dtype=torch.complex64)
    r = complex_to_channels(x)
    assert r.shape == (2, 6, 4, 5) and torch.equal(r[:, 2], x[:, 1].real) and torch.equal(r[:, 3], x[:, 1].imag)
    assert torch.equal(channels_to_complex(r), x)


def test_levels_as_configured():
    m = ConditionalNF(**{**TINY, "num_levels": 3})
    assert len(m.levels) == 3 and len(m.extractor) == 3  # the reference code built 2 of the 3 asked for
    assert sum(c * h * w for c, h, w in m.z_shapes) == m.dim == 2 * 2 * 8 * 8
    with pytest.raises(ValueError):
        ConditionalNF(**{**TINY, "img_size": (12, 12)})  # 12 not divisible by 2^3


@pytest.mark.parametrize("base,shift", [("gaussian", False), ("radial", False), ("gaussian", True)])
def test_invertibility(base, shift):
    torch.manual_seed(0)
    m = _randomise(ConditionalNF(**TINY, base=base, mean_shift=shift), scale=0.2)
    u = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        _, conds = m.conditioning(torch.randn(3, 4, 8, 8), torch.ones(8))
        z, _ = m.encode(u, conds)
        z2 = torch.randn(3, m.dim)
        rel_u = (m.decode(z, conds) - u).norm() / u.norm()
        rel_z = (m.encode(m.decode(z2, conds), conds)[0] - z2).norm() / z2.norm()  # h^-1(h(z)) = z
    assert rel_u < 1e-4 and rel_z < 1e-4


@pytest.mark.parametrize("shift", [False, True])
def test_logdet_matches_brute_force_jacobian(shift):
    torch.manual_seed(0)
    m = _randomise(ConditionalNF(**{**TINY, "num_levels": 2}, mean_shift=shift), scale=0.3).double()
    with torch.no_grad():
        _, conds = m.conditioning(torch.randn(1, 4, 8, 8, dtype=torch.float64), torch.ones(8, dtype=torch.float64))
    u = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    _, logdet = m.encode(u, conds)
    J = torch.autograd.functional.jacobian(lambda v: m.encode(v.reshape(u.shape), conds)[0].reshape(-1), u.reshape(-1))
    assert J.shape == (256, 256)
    assert float(logdet.detach()) == pytest.approx(float(torch.linalg.slogdet(J)[1]), abs=1e-7)
    assert abs(float(logdet.detach())) > 1e-2  # the test is not of a volume-preserving map


@pytest.mark.parametrize("shift", [False, True])
def test_samples_are_data_consistent_and_redraws_counted(shift):
    torch.manual_seed(0)
    m = _randomise(ConditionalNF(**TINY, mean_shift=shift))
    with torch.no_grad():
        m.unet.out.weight.normal_(0, 0.3)  # a non-zero shift mu(y)
    x, y, mask = _measurement()
    xs, info = cnf_sample(m, y, mask, 5, generator=0, chunk=2)
    assert xs.shape == (5, 1, 2, 8, 8) and info["redrawn"] == 0
    op = CoilImageMRI(mask, (8, 8), 2)
    zf, _, _ = zero_filled_and_scale(y, mask)
    err = (op.A(xs.reshape(5, 2, 8, 8)) - zf).abs().max() / zf.abs().max()
    assert err < 1e-5  # A x = A^+ y: measured k-space kept exactly (float precision)
    assert float((xs[0] - xs[1]).abs().max()) > 1e-3  # and the samples differ (in the nullspace)
    # same generator seed -> same samples
    assert torch.allclose(cnf_sample(m, y, mask, 5, generator=0, chunk=5)[0], xs, atol=1e-5)
    # a threshold everything exceeds forces redraws, which are counted (and warned about when they never stop)
    with pytest.warns(RuntimeWarning):
        _, info = cnf_sample(m, y, mask, 3, generator=0, blowup=1e-9, max_redraws=2)
    assert info["redrawn"] == 6


def test_sampling_runs_in_the_shared_loop_and_a_stop_keeps_the_finished_chunks():
    torch.manual_seed(0)
    m = _randomise(ConditionalNF(**TINY))
    x, y, mask = _measurement()
    y2 = torch.cat([y, 0.5 * y])  # two measurements: a sample is finished once it exists for both
    full, info = cnf_sample(m, y2, mask, 5, generator=0, chunk=2)
    assert full.shape[:2] == (5, 2) and info["interrupted"] is False and info["flow_time"] > 0
    # max_time=0 stops after the first chunk (ChainLoop), whose draws are those of the full run
    cut, info = cnf_sample(m, y2[:1], mask, 5, generator=0, chunk=2, max_time=0.0)
    assert info["interrupted"] is True and cut.shape[0] == 2
    ref, _ = cnf_sample(m, y2[:1], mask, 5, generator=0, chunk=2)
    assert torch.equal(cut, ref[:2])
    # two measurements run one after the other: a stop in the first one's chunks leaves no sample finished
    # for both, which is an interrupt, not an empty result
    with pytest.raises(KeyboardInterrupt):
        cnf_sample(m, y2, mask, 5, generator=0, chunk=2, max_time=0.0)


def test_log_posterior_and_map():
    torch.manual_seed(0)
    m = _randomise(ConditionalNF(**TINY), scale=0.2)
    x, y, mask = _measurement()
    xs, _ = cnf_sample(m, y, mask, 8, generator=1)
    lp = cnf_log_posterior(m, xs[:, 0], y.expand(8, -1, -1, -1), mask)
    assert lp.shape == (8,) and torch.isfinite(lp).all()
    # the density of a sample equals base density + logdet along the path that generated it
    mean = xs.mean(0)
    x_map, trace = cnf_map(m, y, mask, mean, steps=60, lr=5e-2)
    lp_map = float(cnf_log_posterior(m, x_map, y, mask))
    assert lp_map > float(cnf_log_posterior(m, mean, y, mask))
    assert lp_map > float(lp.max())
    zf, _, _ = zero_filled_and_scale(y, mask)
    assert float((CoilImageMRI(mask, (8, 8), 2).A(x_map) - zf).abs().max()) < 1e-5  # MAP stays consistent


def test_nullspace_switch_changes_target():
    x, y, mask = _measurement()
    m4 = mask.reshape(1, 1, 1, -1)
    on, off = ConditionalNF(**TINY), ConditionalNF(**TINY, nullspace=False)
    t_on = on.target(x, m4)
    assert float((m4 * fft2c(t_on)).abs().max()) < 1e-5  # (I - A^+A) x has no measured k-space
    assert torch.equal(off.target(x, m4), x)


def test_training_reduces_nll_and_saves(tmp_path):
    from bayesmri.priors.loading import load_model
    from bayesmri.train import Trainer
    from bayesmri.train.cnf import CNFDataset, CNFLoss, data_init

    torch.manual_seed(0)
    data = CNFDataset("train", 8, ncoils=2, acceleration=2, repeats=1, num_acs=2)
    item = data[0]
    assert set(item) == {"x", "zf", "mask"} and item["x"].shape == (2, 8, 8)
    rss = item["zf"].abs().pow(2).sum(0).sqrt().flatten()
    assert float(torch.quantile(rss, 0.95)) == pytest.approx(1.0, rel=1e-5)  # normalised by the measurement
    m = ConditionalNF(**TINY, mean_shift=True)
    data_init(m, data)
    tr = Trainer(m, CNFLoss(0.01), data, tmp_path / "run", steps=40, batch_size=4, lr=3e-3, warmup_steps=0,
                 checkpoint_every=20, progress=False)
    res = tr.fit()
    import csv

    rows = list(csv.DictReader(open(res.log)))
    first = sum(float(r["bpd"]) for r in rows[:5]) / 5
    last = sum(float(r["bpd"]) for r in rows[-5:]) / 5
    assert last < first - 0.05
    m2 = load_model(res.export)
    assert isinstance(m2, ConditionalNF) and m2.config == m.config
    _, y, mask = _measurement()
    assert torch.isfinite(cnf_sample(m2, y, mask, 2, generator=0)[0]).all()


def test_registered_method():
    from bayesmri.methods import available_methods, get_method
    from bayesmri.samplers.base import SamplerResult

    assert "cnf" in available_methods()

    class S:  # the fields of MRISample the method reads
        pass

    x, y, mask = _measurement()
    s = S()
    s.kspace, s.mask = y[0], mask
    m = _randomise(ConditionalNF(**TINY))
    r = get_method("cnf")(s, n_samples=3, generator=0, weights=m, combine="rss")
    assert isinstance(r, SamplerResult) and r.samples.shape == (3, 8, 8) and r.mean.shape == (8, 8)
    check_summaries(r)
    # S^H with maps that are all ones on coil 0: the combination is coil 0 of the samples
    S = torch.zeros(2, 8, 8, dtype=torch.complex64)
    S[0] = 1
    r2 = get_method("cnf")(s, n_samples=3, generator=0, weights=m, maps=S)
    xs, _ = cnf_sample(m, y, mask, 3, generator=0)
    assert torch.allclose(r2.samples, xs[:, 0, 0], atol=1e-5)
    assert torch.allclose(r.samples.real, xs[:, 0].abs().pow(2).sum(1).sqrt(), atol=1e-5)
    with pytest.raises(ValueError):
        get_method("cnf")(s, n_samples=1, weights=m, combine="bogus")


def test_bad_input():
    m = ConditionalNF(**TINY)
    x, y, mask = _measurement()
    with pytest.raises(ValueError):
        cnf_sample(m, y, mask, 0)
    with pytest.raises(TypeError):
        cnf_sample(m, y.real, mask, 1)
    with pytest.raises(ValueError):
        cnf_sample(m, torch.zeros(1, 3, 8, 8, dtype=torch.complex64) + y[:, :1], mask, 1)  # wrong coil count
    with pytest.raises(ValueError):
        m(x, x, mask.reshape(1, 1, 1, -1), mode="bogus")


def test_cnf_loss_noise_is_seeded():
    from bayesmri.train.cnf import CNFLoss

    torch.manual_seed(0)
    m = ConditionalNF(**TINY).eval()
    x, _, mask = _measurement()
    m4 = mask.reshape(1, 1, 1, -1)
    batch = {"x": x, "zf": ifft2c(m4 * fft2c(x)), "mask": m4}
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    clean = float(m(x, batch["zf"], m4, mode="nll")[0])
    assert float(CNFLoss(0.0)(m, batch, g())[0]) == clean
    a, b = float(CNFLoss(0.1)(m, batch, g())[0]), float(CNFLoss(0.1)(m, batch, g())[0])
    assert a == b and a != clean  # the perturbation is applied and reproducible from the step generator
    with pytest.raises(ValueError):
        CNFLoss(-1.0)


def test_training_data_come_from_the_project_simulator():
    """CNFDataset = bayesmri.data's simulator (same maps, SNR, normalisation) with a GRO frame per item."""
    from bayesmri.data.simulate import SimulatedBrainDataset
    from bayesmri.physics.masks import acceleration_of
    from bayesmri.train.cnf import CNFDataset

    ds = CNFDataset("train", 32, ncoils=4, acceleration=4, repeats=1, flips=False)
    sim = SimulatedBrainDataset("train", size=32, ncoils=4, acceleration=4)
    assert torch.equal(ds.maps, sim.maps)
    a, b = ds[100], ds[101]
    assert not torch.equal(a["mask"], b["mask"])  # the mask frame varies per item, as in the test split
    assert abs(acceleration_of(a["mask"].reshape(-1), (32, 32)) - 4) < 0.5
    # x = S * image (ground truth coil images from the shared maps), zf = A^+ y of the same acquisition
    img = (ds.maps.conj() * a["x"]).sum(0)
    assert torch.allclose(ds.maps * img, a["x"], atol=1e-5)
    k = a["mask"] * fft2c(a["zf"])
    noise = k - a["mask"] * fft2c(a["x"])
    snr = 10 * torch.log10(a["x"].abs().pow(2).mean() / (noise.abs().pow(2).sum() / (a["mask"].sum() * 4 * 32)))
    assert abs(float(snr) - 30.0) < 1.5  # the project's SNR definition, measured on the sampled lines


def test_shipped_weights_beat_zero_filled():
    from bayesmri.data.simulate import SimulatedBrainDataset
    from bayesmri.flows.cnf import load_cnf
    from bayesmri.metrics import psnr

    m = load_cnf("cnf64")
    assert m.config["num_levels"] == 3 and m.img_size == (64, 64)
    ds = SimulatedBrainDataset("test", size=64, pattern="gro", acceleration=4, indices=[60])
    s = ds[0]
    y, mask = s.kspace[None], s.mask
    xs, info = cnf_sample(m, y, mask, 4, generator=0)
    S = s.maps_true
    mean = (S.conj() * xs[:, 0]).sum(1).mean(0)
    zf = (S.conj() * ifft2c(y[0])).sum(0)
    assert float(psnr(mean, s.target)) > float(psnr(zf, s.target)) + 5.0
    assert float((mask * (fft2c(xs[:, 0]) - y)).abs().max()) < 1e-5 * float(y.abs().max())


def test_training_noise_is_default_image_domain_and_keeps_the_target_in_the_nullspace():
    """Regression for the degenerate NLL (issue 7): the nullspace target is exactly zero on image rows outside
    the head; the shipped weights trained with noise 0.005 after the projection stretched those directions
    160x (log-det 4.6 nats/dim). The loss must perturb x by default, before the projection (so the perturbed
    target has no measured k-space and is no longer zero on the empty rows), and warn without noise."""
    import argparse

    from bayesmri.flows.cnf import TRAINING_NOISE_STD
    from bayesmri.train.cnf import CNFLoss, cli_add_arguments

    assert TRAINING_NOISE_STD > 0 and CNFLoss().noise_std == TRAINING_NOISE_STD
    ap = argparse.ArgumentParser()
    cli_add_arguments(ap)
    assert ap.parse_args([]).train_noise == TRAINING_NOISE_STD

    torch.manual_seed(0)
    m = ConditionalNF(**TINY).eval()
    x, _, mask = _measurement(R=4)
    x[..., :3, :] = 0  # empty rows, as outside the head
    m4 = mask.reshape(1, 1, 1, -1)
    batch = {"x": x, "zf": ifft2c(m4 * fft2c(x)), "mask": m4}
    seen = []
    orig = m.log_prob
    m.log_prob = lambda u, conds: (seen.append(u.detach()), orig(u, conds))[1]
    loss, _ = CNFLoss()(m, batch, torch.Generator().manual_seed(1))
    t = channels_to_complex(seen[-1])
    assert float((m4 * fft2c(t)).abs().max()) < 1e-5  # the perturbed target stays in the nullspace
    rows = complex_to_channels(t)[..., :3, :]
    assert 0.5 * TRAINING_NOISE_STD < float(rows.pow(2).mean().sqrt()) < 2 * TRAINING_NOISE_STD  # rows are noisy
    with pytest.warns(UserWarning, match="unbounded"):
        loss0, _ = CNFLoss(0.0)(m, batch, torch.Generator().manual_seed(1))
    assert float(complex_to_channels(channels_to_complex(seen[-1]))[..., :3, :].abs().max()) < 1e-6  # exact zeros
    assert float(loss.detach()) != float(loss0.detach())  # the noise reaches the likelihood
    with pytest.raises(ValueError, match="noise"):
        m(x, batch["zf"], m4, mode="nll", noise=torch.randn(1, 4, 8, 8))  # real 2C layout: rejected


def test_strong_augmentation_warps_the_slice_deterministically():
    """augment="strong": each item is a warped, contrast-changed copy of its slice, the same on every call."""
    from bayesmri.data.builtin import load_slices
    from bayesmri.train.cnf import CNFDataset

    plain = CNFDataset("train", 32, ncoils=4, acceleration=4, repeats=1, flips=False)
    strong = CNFDataset("train", 32, ncoils=4, acceleration=4, repeats=1, flips=False, augment="strong")
    i = 60
    a, b = plain[i], strong[i]
    assert torch.equal(b["x"], strong[i]["x"])  # seeded per item: resumable data
    img_a = (plain.maps.conj() * a["x"]).sum(0).abs()
    img_b = (strong.maps.conj() * b["x"]).sum(0).abs()
    ref = load_slices("train", size=32)[i]
    corr = lambda u, v: float(torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1])  # noqa: E731
    assert corr(img_a, ref) > 0.99  # no augmentation: the slice itself
    assert 0.6 < corr(img_b, ref) < 0.99  # the same anatomy, moved
    with pytest.raises(ValueError, match="augment"):
        CNFDataset("train", 32, augment="elastic")
