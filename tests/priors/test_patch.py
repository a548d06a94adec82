"""PatchScore: whole-image scores from a patch-trained network (tiled with random offsets, or whole)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bayesmri.priors.patch import PatchScore
from bayesmri.priors.score_unet import build_score_unet
from bayesmri.priors.score import ScorePrior


class PixelGaussian(nn.Module):
    """Independent pixels N(mu, s2): score_sigma(x) = -(x - mu) / (s2 + sigma^2), known everywhere."""

    def __init__(self, mu=0.3, s2=0.5):
        super().__init__()
        self.mu, self.s2 = mu, s2
        self.w = nn.Parameter(torch.zeros(1))

    def score(self, x, sigma):
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return -(x - self.mu) / (self.s2 + sig**2)


class LocalExperts(nn.Module):
    """A stationary field-of-experts score -K^T tanh(K x) with 5x5 filters: receptive radius 4."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.k = nn.Parameter(torch.randn(3, 1, 5, 5, generator=g) / 5)

    def score(self, x, sigma):
        h = torch.tanh(F.conv2d(x[:, None], self.k, padding=2))
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1)
        return -F.conv_transpose2d(h, self.k, padding=2)[:, 0] / (1 + sig**2)


def test_tiled_score_equals_a_pixelwise_prior_at_sizes_that_are_not_multiples_of_the_patch():
    model = PixelGaussian()
    x = torch.randn(2, 37, 50)
    for mode in ("tiled", "whole"):
        ps = PatchScore(model, patch=16, mode=mode, margin=0, multiple=8)
        for _ in range(3):  # every random offset
            torch.testing.assert_close(ps.score(x, 0.7), model.score(x, 0.7))


def test_tiles_with_a_halo_of_the_receptive_radius_reproduce_the_whole_image_score_inside():
    model = LocalExperts()
    x = torch.randn(2, 45, 61)
    whole = model.score(x, 0.2)
    ps = PatchScore(model, patch=24, mode="tiled", margin=4, multiple=1, seed=3)
    for _ in range(4):
        t = ps.score(x, 0.2)
        torch.testing.assert_close(t[:, 4:-4, 4:-4], whole[:, 4:-4, 4:-4], rtol=1e-5, atol=1e-6)
    # without the halo the seams are wrong at one call, and the random offsets average them out
    ps0 = PatchScore(model, patch=16, mode="tiled", margin=0, multiple=1, seed=3)
    err1 = (ps0.score(x, 0.2) - whole)[:, 4:-4, 4:-4].pow(2).mean()
    avg = torch.stack([ps0.score(x, 0.2) for _ in range(64)]).mean(0)
    err64 = (avg - whole)[:, 4:-4, 4:-4].pow(2).mean()
    assert err1 > 1e-4  # the test can see a seam
    assert err64 < 0.25 * err1


def test_random_offsets_move_the_seams_and_the_seed_reproduces_them():
    model = LocalExperts()
    x = torch.randn(1, 40, 40)
    a = PatchScore(model, patch=16, margin=0, multiple=1, seed=1)
    b = PatchScore(model, patch=16, margin=0, multiple=1, seed=1)
    s1, s2 = a.score(x, 0.3), a.score(x, 0.3)
    assert not torch.allclose(s1, s2)
    torch.testing.assert_close(b.score(x, 0.3), s1)


def test_images_of_one_batch_get_their_own_seams():
    # a sampler's chains are one batch: a shared offset would put every chain's seams at one place, and
    # the seams of the last steps would then line up in the posterior mean and std (seen at 320x320)
    model = LocalExperts()
    x = torch.randn(1, 40, 40).expand(6, 40, 40).contiguous()
    ps = PatchScore(model, patch=16, margin=0, multiple=1, seed=2)
    s = ps.score(x, 0.3)[:, 4:-4, 4:-4]  # the padding noise (one draw per image) reaches 4 px into the image
    assert not any(torch.allclose(s[0], s[i]) for i in range(1, 6))
    # each image alone is still a tiling of the right score: tiles with the receptive radius as halo match
    halo = PatchScore(model, patch=24, margin=4, multiple=1, seed=2).score(x, 0.3)
    torch.testing.assert_close(halo[:, 4:-4, 4:-4], model.score(x, 0.3)[:, 4:-4, 4:-4], rtol=1e-5, atol=1e-6)


def test_a_score_unet_runs_at_sizes_other_than_its_training_crop():
    torch.manual_seed(0)
    net = build_score_unet("small64").eval()
    nn.init.normal_(net.conv_out.weight, std=0.05)  # the zero-initialised output would make every score 0
    x = torch.rand(2, 70, 90)
    for mode in ("tiled", "whole"):
        ps = PatchScore(net, patch=32, mode=mode, margin=4)
        with torch.no_grad():
            s = ps.score(x, torch.tensor([0.1, 1.0]))
        assert s.shape == x.shape and bool(torch.isfinite(s).all()) and float(s.abs().mean()) > 0
    with pytest.raises(ValueError, match="divisible"):
        net.score(x, 0.1)  # the bare network needs multiples of 8: the wrapper pads


def test_score_prior_accepts_the_wrapper_for_complex_images():
    model = PixelGaussian(mu=0.0, s2=1.0)
    prior = ScorePrior(PatchScore(model, patch=16, multiple=8), scale=2.0)
    x = torch.randn(3, 20, 27, dtype=torch.complex64)
    s = prior.score(x, 0.5)
    # data scale a = 2: s(x) = s_net(x / a, sigma / a) / a for each real component
    ref = torch.complex(model.score(x.real / 2, 0.25) / 2, model.score(x.imag / 2, 0.25) / 2)
    torch.testing.assert_close(s, ref)


@pytest.mark.parametrize("bad", [dict(mode="x"), dict(patch=20), dict(margin=8, patch=16), dict(chunk_size=0)])
def test_bad_settings_are_one_clear_error(bad):
    with pytest.raises(ValueError):
        PatchScore(PixelGaussian(), **{**dict(patch=16, multiple=8), **bad})


def test_prior_for_size_tiles_crop_trained_networks_and_pads_others_only_when_needed():
    from bayesmri.priors.patch import prior_for_size

    net = build_score_unet("small64")
    assert prior_for_size(net, (64, 72)) is net  # multiples of 8: the network as it is
    w = prior_for_size(net, (60, 70))
    assert isinstance(w, PatchScore) and w.mode == "whole"
    net.meta = {"prior": {"training_crop": [32, 32]}}
    w = prior_for_size(net, (64, 64))
    assert isinstance(w, PatchScore) and w.mode == "tiled" and w.patch == 32
    assert prior_for_size(net, (64, 64), "none") is net
    with pytest.raises(ValueError, match="tiling"):
        prior_for_size(net, (64, 64), "bogus")


def test_diffusion_methods_run_at_a_size_that_is_not_a_multiple_of_the_network_factor():
    from bayesmri.data import simulate_acquisition
    from bayesmri.methods import get_method
    from bayesmri.physics.masks import make_mask

    g = torch.Generator().manual_seed(0)
    mag = torch.zeros(60, 44)
    mag[10:50, 8:36] = 1.0
    s = simulate_acquisition(mag, mask=make_mask("gro", (60, 44), 2, seed=0), ncoils=4, snr_db=30, seed=0)
    for name, opts in (("pula", dict(n_levels=2)), ("score-mri", dict(n_levels=4)), ("ula-annealed", dict(n_levels=2))):
        res = get_method(name)(s, n_samples=2, generator=g, maps="true", **opts)
        assert res.mean.shape == (60, 44) and bool(torch.isfinite(res.mean).all())


def test_shipped_real_size_prior_is_the_default_from_96_pixels_and_is_tiled():
    from bayesmri.priors.loading import load_model
    from bayesmri.priors.patch import prior_for_size
    from bayesmri.priors.score import default_score_weights

    assert default_score_weights((64, 64)) == "score_small64"
    assert default_score_weights((1, 96, 320)) == "score_native"
    net = load_model("score_native")
    w = prior_for_size(net, (100, 130))
    assert isinstance(w, PatchScore) and w.mode == "tiled" and w.patch == net.meta["prior"]["training_crop"][0]
    x = torch.rand(1, 100, 130)
    with torch.no_grad():
        s = w.score(x, 0.05)
    assert s.shape == x.shape and bool(torch.isfinite(s).all())


def test_channels_last_gives_the_same_score():
    """The CPU default (channels-last network) agrees with the contiguous format, and the wrapped model
    is put back when asked for the other format."""
    torch.manual_seed(0)
    net = build_score_unet("small64").eval()
    x = torch.randn(2, 40, 56)
    with torch.no_grad():
        ref = PatchScore(net, patch=32, channels_last=False, seed=3).score(x, 0.2)
        ps = PatchScore(net, patch=32, seed=3)
        out = ps.score(x, 0.2)
    assert ps._format is torch.channels_last
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    with torch.no_grad():
        PatchScore(net, patch=32, channels_last=False, seed=3).score(x, 0.2)
    assert next(p for p in net.parameters() if p.ndim == 4).is_contiguous()


# ---------------------------------------------------------------------- patch position input (PaDIS)
class PositionGaussian(nn.Module):
    """Independent pixels N(mu(y, x), s2) with a mean that depends on where the pixel lies in the image."""

    position_channels = 2

    def __init__(self, s2=0.5):
        super().__init__()
        self.s2 = s2
        self.w = nn.Parameter(torch.zeros(1))

    @staticmethod
    def mean(pos):
        return 0.3 * pos[:, 0] - 0.5 * pos[:, 1] ** 2

    def score(self, x, sigma, pos):
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return -(x - self.mean(pos)) / (self.s2 + sig**2)


def test_tiles_get_the_coordinates_of_their_pixels_in_the_whole_image():
    from bayesmri.priors.score_unet import image_coordinates

    model = PositionGaussian()
    x = torch.randn(3, 37, 50)
    truth = model.score(x, 0.7, image_coordinates(37, 50)[None])
    for mode, margin in (("tiled", 0), ("tiled", 3), ("whole", 0)):
        ps = PatchScore(model, patch=16, mode=mode, margin=margin, multiple=8, seed=1)
        for _ in range(3):  # every random offset, one per image
            torch.testing.assert_close(ps.score(x, 0.7), truth)


def test_a_position_network_starts_from_a_position_free_one_and_its_position_input_is_used():
    from bayesmri.priors.score_unet import ScoreUNet, image_coordinates
    from bayesmri.train.score import ScoreMatchingLoss

    cfg = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention=False, embed_dim=16)
    torch.manual_seed(0)
    plain = ScoreUNet(**cfg)
    torch.nn.init.normal_(plain.conv_out.weight, std=0.05)
    pos_net = ScoreUNet(**cfg, position_channels=2)
    state = plain.state_dict()
    state["conv_in.weight"] = torch.cat([state["conv_in.weight"], torch.zeros(8, 2, 3, 3)], 1)
    pos_net.load_state_dict(state)
    x = torch.randn(2, 16, 16)
    torch.testing.assert_close(pos_net(x, 0.5), plain(x, 0.5))  # zero weights on the coordinates

    # Crops of an image that is +1 on its left half and -1 on its right half. At noise levels where the
    # 16x16 crop's own mean cannot tell them apart (sigma / 16 > 1) only the position can: train briefly,
    # then denoise pure noise at the two positions.
    def batch(n, g):
        left = torch.randint(0, 48, (n,), generator=g)
        full = image_coordinates(64, 64)
        pos = torch.stack([full[:, 24:40, int(c):int(c) + 16] for c in left])
        return {"image": torch.where(pos[:, 1:2] < 0, 1.0, -1.0), "pos": pos}

    loss_fn = ScoreMatchingLoss(sigma_max=60.0, sigma_min=20.0)
    opt = torch.optim.Adam(pos_net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss, _ = loss_fn(pos_net, batch(16, g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    full = image_coordinates(64, 64)
    z = 40.0 * torch.randn(4, 16, 16, generator=g)
    with torch.no_grad():
        d_left = pos_net.denoise(z, 40.0, full[None, :, 24:40, 0:16]).mean()
        d_right = pos_net.denoise(z, 40.0, full[None, :, 24:40, 48:64]).mean()
    assert d_left - d_right > 1.0, (float(d_left), float(d_right))
    with pytest.raises(ValueError, match="pos must have shape"):
        pos_net(z, 3.0, torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="no position input"):
        plain(z, 3.0, full[None, :, :16, :16])


def test_native_crops_carry_coordinates_that_match_the_whole_field_of_view():
    from bayesmri.data.synth import BrainSliceSynthesizer
    from bayesmri.priors.score_unet import image_coordinates

    whole = BrainSliceSynthesizer("val", crop=0, positions=True)
    for seed in range(2):
        b = whole(1, torch.Generator().manual_seed(seed))
        n = b["image"].shape[-1]
        torch.testing.assert_close(b["pos"][0], image_coordinates(n, n), atol=1e-5, rtol=0)
    crops = BrainSliceSynthesizer("val", crop=32, positions=True)(4, torch.Generator().manual_seed(0))
    assert crops["image"].shape == (4, 1, 32, 32) and crops["pos"].shape == (4, 2, 32, 32)
    # crops are drawn inside the head, which fills the middle of a 200-256 mm field of view
    assert bool((crops["pos"].abs() < 1.2).all())
