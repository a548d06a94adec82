"""``recon --opt/--prior/--list`` (bayesmri.options), the score-prior registry and the validated defaults."""
import inspect
import json
import math

import pytest
import torch

from bayesmri import cli as bcli
from bayesmri.options import OptionError, check_options, method_options, parse_value, recon_options
from bayesmri.priors.loading import save_model
from bayesmri.priors.pogmdm import load_pogmdm
from bayesmri.priors.registry import PoGMDMScore, available_priors, load_prior, register_prior
from bayesmri.methods.diffusion import DEFAULTS
from tests.samplers.test_learned import tiny_net, tiny_sample  # noqa: F401  (fixture)
from tests.test_cli_reliability import cli, one_line_error

SCORE_METHODS = ("pula", "ula-annealed", "score-mri")
FEW = {"pula": dict(n_levels=3), "ula-annealed": dict(n_levels=3), "score-mri": dict(n_levels=6, t0=0.5)}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A tiny position-free score network saved as a weights pair (what --prior PATH loads)."""
    net = tiny_net()
    stem = tmp_path_factory.mktemp("w") / "tiny_score"
    save_model(net, stem, model_type="score_unet", config=net.config)
    return str(stem) + ".safetensors"


@pytest.fixture(scope="module")
def sim64(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    r = cli("simulate", "--split", "val", "--slices", "1", "--size", "64", "--out", d / "s.h5")
    assert r.returncode == 0, r.stderr
    return d / "s.h5"


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_every_score_prior_runs_under_every_score_sampler(method, tiny_sample, tiny_weights):  # noqa: F811
    from bayesmri.methods import get_method

    H, W = tiny_sample.img_shape
    for prior in available_priors() + [tiny_weights]:
        r = get_method(method)(tiny_sample, n_samples=2, generator=0, prior=prior, maps="true", **FEW[method])
        assert r.samples.shape == (2, H, W) and r.mean.shape == (H, W) and r.std.shape == (H, W), prior
        assert r.samples.is_complex() and torch.isfinite(r.samples).all() and (r.std > 0).any(), prior


def test_every_score_prior_runs_under_pogmdm_joint(tiny_sample, tiny_weights):  # noqa: F811
    """Priors with a score are interchangeable under every score-based sampler, PoGMDM-joint's included."""
    from bayesmri.methods import get_method
    from bayesmri.methods.pogmdm import joint_prior
    from bayesmri.priors.pogmdm import PoGMDM
    from bayesmri.priors.score import ScorePrior

    H, W = tiny_sample.img_shape
    for prior in available_priors() + [tiny_weights]:
        r = get_method("pogmdm-joint")(tiny_sample, n_samples=2, generator=0, prior=prior, n_steps=10, map_steps=2)
        assert r.samples.shape == (2, H, W) and r.samples.is_complex() and torch.isfinite(r.samples).all(), prior
    # a PoGMDM runs as itself (its energy serves the MAP step); a score network in the PoGMDM's units
    assert isinstance(joint_prior("pogmdm_mri", (H, W), "cpu"), PoGMDM)
    p = joint_prior(tiny_weights, (H, W), "cpu")
    assert isinstance(p, ScorePrior) and p.scale == pytest.approx(1 / PoGMDMScore(load_pogmdm("pogmdm_mri")).c)


def test_recon_maps_sources(sim64, tmp_path):
    """--maps true uses the simulation's maps stored in the file; joint only for a method that estimates maps;
    a file without simulated maps refuses true, in one line and before any output."""
    import h5py

    with h5py.File(sim64, "r") as f:
        assert f["maps_true"].shape == (1, 8, 64, 64)
    r = cli("recon", sim64, "--method", "zf", "--maps", "true", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    e = cli("recon", sim64, "--method", "zf", "--out", tmp_path / "e")
    true_psnr = json.loads((tmp_path / "t" / "metrics.json").read_text())["zf"]
    esp_psnr = json.loads((tmp_path / "e" / "metrics.json").read_text())["zf"]
    assert e.returncode == 0 and true_psnr != esp_psnr  # the maps were used
    one_line_error(cli("recon", sim64, "--method", "tv", "--maps", "joint", "--out", tmp_path / "j"),
                   "'tv'", "joint", "pogmdm-joint")
    bare = tmp_path / "bare.h5"
    with h5py.File(sim64, "r") as f, h5py.File(bare, "w") as g:
        for k in f:
            if k != "maps_true":
                f.copy(k, g)
        g.attrs.update(dict(f.attrs))
    one_line_error(cli("recon", bare, "--method", "zf", "--maps", "true", "--out", tmp_path / "b"),
                   "--maps true", "no simulated coil maps")
    assert not (tmp_path / "j").exists() and not (tmp_path / "b").exists()
    r = cli("recon", sim64, "--method", "pogmdm-joint", "--maps", "joint", "--samples", "2", "--opt", "n_steps=10",
            "--opt", "map_steps=2", "--out", tmp_path / "pj")
    assert r.returncode == 0, r.stderr


def test_pogmdm_score_is_the_change_of_variables():
    # score of c X when X ~ PoGMDM: s(x / c, sigma / c) / c, and at the data scale a of ScorePrior with a c
    from bayesmri.priors.score import ScorePrior

    model = load_pogmdm("pogmdm_mri")
    w = PoGMDMScore(model)
    assert w.c == pytest.approx(1.156089, rel=1e-5)
    x, sigma, a = torch.rand(2, 24, 24), 0.2, 3.0
    torch.testing.assert_close(w.score(x, sigma), model.score(x / w.c, sigma / w.c) / w.c)
    got = ScorePrior(w, scale=a).score(x, sigma)
    ref = model.score(x / (a * w.c), sigma / (a * w.c)) / (a * w.c)
    # float32 tables of the experts: agreement to 1e-4 of the largest value
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
    assert isinstance(load_prior("pogmdm", (128, 128)), PoGMDMScore)  # the size rule of pogmdm-joint
    assert load_prior("pogmdm", (128, 128)) is load_prior("pogmdm_native")


def test_option_parsing_and_checks():
    assert [parse_value(v) for v in ("3", "0.5", "1e-3", "true", "False", "none", "fit", "nan")] == [
        3, 0.5, 1e-3, True, False, None, "fit", "nan"]
    assert method_options("ula-annealed")["n_levels"] == DEFAULTS["ula-annealed"]["n_levels"]
    assert method_options("tv")["lam"] == 2e-3 and method_options("l1wav")["wavelet"] == "db4"
    # the method's defaults win over JointPoGMDM's signature (n_steps 1000, final_denoise False)
    from bayesmri.methods.pogmdm import METHOD_DEFAULTS as POGMDM_DEFAULTS
    from bayesmri.samplers.pogmdm_joint import JointPoGMDM
    sig = inspect.signature(JointPoGMDM).parameters
    for key in ("n_steps", "final_denoise"):
        assert POGMDM_DEFAULTS[key] != sig[key].default
        assert method_options("pogmdm-joint")[key] == POGMDM_DEFAULTS[key]
    assert method_options("cinn")["temperature"] == 1.0  # from the signature
    assert check_options("pula", {"step": 1, "cg_iter": 20})["step"] == 1.0  # int for a float; number for "auto"
    for opts, needle in ((["n_levels=4.5"], "n_levels=4.5"), (["final_denoise=1"], "final_denoise"),
                         (["nosuch=1"], "'nosuch'"), (["n_levels"], "KEY=VALUE"), (["step=1", "step=2"], "twice")):
        with pytest.raises(OptionError, match=needle):
            recon_options("pula", opts=opts)
    with pytest.raises(OptionError, match="not both"):
        recon_options("pula", prior="pogmdm", weights="score_native")
    with pytest.raises(OptionError, match="no prior choice"):
        recon_options("cnf", prior="pogmdm")
    with pytest.raises(OptionError, match="unknown prior 'nosuch'"):
        recon_options("pula", prior="nosuch")
    assert recon_options("score-mri", prior="pogmdm", opts=["n_levels=40", "snr=0.3"]) == {
        "n_levels": 40, "snr": 0.3, "prior": "pogmdm"}


@pytest.mark.parametrize("argv,needles", [
    (["--method", "ula-annealed", "--opt", "nosuch=1"], ["'ula-annealed'", "'nosuch'", "n_levels=480", "gamma=1.5"]),
    (["--method", "pula", "--opt", "n_levels=many"], ["'pula'", "n_levels='many'", "step=0.5"]),
    (["--method", "tv", "--prior", "pogmdm"], ["'tv'", "no prior choice", "pula"]),
    (["--method", "pula", "--prior", "nosuch"], ["'pula'", "nosuch", "score_native"]),
], ids=["unknown-key", "bad-value", "no-prior-choice", "unknown-prior"])
def test_bad_opt_is_one_line_and_writes_nothing(sim64, tmp_path, argv, needles):
    out = tmp_path / "out"
    one_line_error(cli("recon", sim64, *argv, "--out", out, "--no-progress"), *needles)
    assert not out.exists()


def test_recon_list_shows_methods_priors_and_defaults():
    r = cli("recon", "--list")
    assert r.returncode == 0, r.stderr
    from bayesmri.methods import available_methods

    for m in available_methods():
        assert f"  {m}  [" in r.stdout
    for k, v in DEFAULTS["ula-annealed"].items():
        assert f"{k}={v!r}" in r.stdout
    assert "lam=0.002" in r.stdout and "score_native" in r.stdout and "pogmdm" in r.stdout


def test_recon_ula_annealed_defaults_beat_zero_filled(sim64, tmp_path):
    # the validated defaults (480 levels, gamma 1.5); the earlier ones (60 levels, gamma 0.5) ended
    # at 11.9 dB here, 10 dB below zero-filled. 64 x 64: the size the default weights were trained at.
    psnr = {}
    for m in ("zf", "ula-annealed"):
        r = cli("recon", sim64, "--method", m, "--samples", "1", "--out", tmp_path / m, "--no-progress", timeout=600)
        assert r.returncode == 0, r.stderr
        psnr[m] = next(iter(json.loads((tmp_path / m / "metrics.json").read_text())[m].values()))["psnr"]
    assert psnr["ula-annealed"] > psnr["zf"] + 3.0, psnr


class SmoothGaussPrior(torch.nn.Module):
    """A stationary Gaussian prior around a flat image of 0.5 (training units: 95th percentile 1) whose
    covariance favours smooth images: in Fourier space ``x^ ~ N(m^, v(k))`` with ``v(k) = v0 / (1 + |k|^2 / k0^2)``.
    Its noised score is exact: ``score(x, sigma) = F^-1[-(x^ - m^) / (v(k) + sigma^2)]``."""

    def __init__(self, v0=0.3, k0=0.15):
        super().__init__()
        self.v0, self.k0, self.calls = v0, k0, 0

    def _v(self, H, W):
        ky = torch.fft.fftfreq(H)[:, None]
        kx = torch.fft.fftfreq(W)[None, :]
        return self.v0 / (1 + (ky**2 + kx**2) / self.k0**2)

    def score(self, x, sigma):
        self.calls += 1
        H, W = x.shape[-2:]
        r = torch.fft.fft2(x - 0.5, norm="ortho")
        return torch.fft.ifft2(-r / (self._v(H, W) + float(sigma) ** 2), norm="ortho").real.to(x.dtype)


def test_a_new_prior_runs_through_recon(sim64, tmp_path):
    prior = SmoothGaussPrior()
    register_prior("test-smooth-gauss", lambda shape, device: prior)
    out = tmp_path / "o"
    argv = ["recon", str(sim64), "--method", "pula", "--prior", "test-smooth-gauss", "--opt", "n_levels=5",
            "--samples", "2", "--out", str(out), "--no-progress"]
    assert bcli.main(argv) == 0
    assert prior.calls >= 5  # the registered prior was the one sampled with
    row = next(iter(json.loads((out / "metrics.json").read_text())["pula"].values()))
    assert row["nfe"] == 5 + 1  # --opt n_levels reached the sampler (+ the final Tweedie step)
    assert row["settings"]["method_options"] == {"prior": "test-smooth-gauss", "n_levels": 5}
    assert math.isfinite(row["psnr"])


def test_pogmdm_lipschitz_bound_holds_and_networks_keep_one():
    # kappa(sigma) / sigma^2 bounds the score's Lipschitz constant (power iteration on the Jacobian);
    # above 1 (overlapping filters), which is why annealed ULA takes smaller steps with this prior
    from bayesmri.priors.score import ScorePrior

    w = load_prior("pogmdm_native")
    x0 = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    for sigma in (0.05, 0.5, 2.0):
        v = torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(1))
        for _ in range(25):
            v = v / v.norm()
            jv = (w.score(x0 + 1e-3 * v, sigma) - w.score(x0 - 1e-3 * v, sigma)) / 2e-3
            v = jv
        kappa = w.lipschitz_factor(sigma, (32, 32))
        assert sigma**2 * float(jv.norm()) <= kappa * 1.01, (sigma, kappa)
        assert kappa > 1
    assert ScorePrior(w, scale=2.0).lipschitz_factor(1.0) == pytest.approx(w.lipschitz_factor(0.5))
    assert ScorePrior(tiny_net()).lipschitz_factor(0.3) == 1.0


def test_calibrated_preset_resolves_to_its_options_and_opt_overrides():
    from bayesmri.methods.diffusion import PRESETS

    for m in ("pula", "score-mri"):
        want = PRESETS[m]["calibrated"]
        got = recon_options(m, preset="calibrated")
        assert got == check_options(m, dict(want)) and got["final_denoise"] is False and got["sigma_min"] == 0.01
        assert recon_options(m, preset="calibrated", opts=["final_denoise=true"])["final_denoise"] is True
        assert set(got) <= set(method_options(m))  # every preset key is an option the method takes
    assert recon_options("score-mri", preset="calibrated")["likelihood"] == "annealed"
    assert recon_options("score-mri", opts=["n_levels=40"]) == {"n_levels": 40}  # no preset: --opt only
    with pytest.raises(OptionError, match="no preset 'calibrated'; its presets: none"):
        recon_options("tv", preset="calibrated")
    with pytest.raises(OptionError, match="its presets: bench, calibrated, demo"):
        recon_options("pula", preset="nosuch")


def test_recon_preset_reaches_the_sampler(sim64, tmp_path):
    # --preset calibrated (Score-MRI, shortened by --opt) is what the sampler runs: metrics.json records the
    # resolved options, and a method without the preset is a one-line error that writes nothing
    out = tmp_path / "cal"
    r = cli("recon", sim64, "--method", "score-mri", "--preset", "calibrated", "--opt", "n_levels=6", "--samples", "2",
            "--out", out, "--no-progress", timeout=600)
    assert r.returncode == 0, r.stderr
    text = (out / "metrics.json").read_text()
    assert '"likelihood": "annealed"' in text and '"final_denoise": false' in text and '"n_levels": 6' in text
    one_line_error(cli("recon", sim64, "--method", "tv", "--preset", "calibrated", "--out", tmp_path / "tv",
                       "--no-progress"), "'tv'", "no preset 'calibrated'")
    assert not (tmp_path / "tv").exists()
