import pytest
import torch

from bayesmri.priors.score_unet import CONFIGS, ScoreUNet, build_score_unet, count_parameters


def _tiny(**kw):
    torch.manual_seed(0)
    args = dict(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention=True, embed_dim=16)
    args.update(kw)
    m = ScoreUNet(**args)
    # The output conv is zero-initialised (score 0 at init); randomise it for structural checks.
    torch.nn.init.normal_(m.conv_out.weight, std=0.1)
    return m.eval()


def test_fully_convolutional_two_sizes_and_layouts():
    m = _tiny()
    g = torch.Generator().manual_seed(1)
    for H, W in [(16, 16), (24, 32)]:
        x = torch.randn(2, 1, H, W, generator=g)
        out = m(x, torch.tensor([0.1, 5.0]))
        assert out.shape == x.shape
        # (B, H, W) input gives the same numbers as (B, 1, H, W).
        torch.testing.assert_close(m(x[:, 0], torch.tensor([0.1, 5.0])), out[:, 0])
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 1, 18, 16), 1.0)
    with pytest.raises(TypeError):
        m(torch.randn(1, 16, 16, dtype=torch.complex64), 1.0)
    with pytest.raises(ValueError, match="positive"):
        m(torch.randn(1, 16, 16), 0.0)


def test_sigma_conditioning_and_parametrisation():
    m = _tiny()
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f1, f2 = m(x, 0.05), m(x, 2.0)
        # The noise level changes the output (the time embedding reaches the blocks).
        assert (f1 - f2).abs().max() > 1e-3 * f1.abs().max()
        # score = F / sigma and denoise = x + sigma^2 score (Tweedie) for per-sample sigmas.
        s = torch.tensor([0.3, 7.0])
        xx = x.repeat(2, 1, 1, 1)
        torch.testing.assert_close(m.score(xx, s), m(xx, s) / s[:, None, None, None])
        torch.testing.assert_close(m.denoise(xx, s), xx + s[:, None, None, None] ** 2 * m.score(xx, s))
        # Per-sample sigmas are not mixed up across the batch.
        torch.testing.assert_close(m(xx, s)[1:], m(x, 7.0))


def test_zero_init_output_and_named_configs():
    m = build_score_unet("small64")
    with torch.no_grad():
        assert float(m(torch.randn(1, 64, 64), 1.0).abs().max()) == 0.0  # score 0 at init: loss starts at 1
    n_small = count_parameters(m)
    assert 0.5e6 < n_small < 2e6
    assert m.config == build_score_unet(dict(m.config)).config
    with pytest.raises(ValueError, match="unknown"):
        build_score_unet("huge")
    assert set(CONFIGS) >= {"small64", "default128"}


def test_brief_training_approaches_gaussian_score(tmp_path):
    """Data x ~ N(0, I): the true score of p_sigma is -x / (1 + sigma^2) (Chung & Ye eq. 17 target)."""
    from bayesmri.train import Trainer
    from bayesmri.train.score import ScoreMatchingLoss

    torch.manual_seed(0)
    m = ScoreUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention=False, embed_dim=16,
                  sigma_data=1.0)

    def err(model):
        g = torch.Generator().manual_seed(1)
        x0 = torch.randn(64, 1, 8, 8, generator=g)
        s = torch.exp(torch.empty(64).uniform_(-2.3, 1.1, generator=g))[:, None, None, None]
        xt = x0 + s * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            sc = model.score(xt, s.flatten())
        return float(((sc + xt / (1 + s**2)) ** 2 * s**2).mean())

    e0 = err(m)
    tr = Trainer(m, ScoreMatchingLoss(sigma_max=3.0, sigma_min=0.1), lambda bs, g: torch.randn(bs, 1, 8, 8, generator=g),
                 tmp_path, steps=120, batch_size=16, lr=3e-3, warmup_steps=10, progress=False,
                 checkpoint_every=10**6)
    for _ in range(tr.cfg.steps):
        tr.train_step()
    assert err(m) < 0.4 * e0
