"""``bayesmri train pogmdm --init``: warm starts into a model with more experts (more shears, a low-pass expert)."""
import pytest
import torch

from bayesmri.priors.loading import save_model, weights_dir
from bayesmri.priors.pogmdm import PoGMDM
from bayesmri.train.pogmdm import _filter_keys, _warm_start


@pytest.fixture(scope="module")
def source():
    path = weights_dir() / "pogmdm_native.safetensors"
    from bayesmri.priors.loading import load_model

    src = load_model("pogmdm_native")
    # EMA weights sit slightly inside the constraint set; a warm start projects them onto it (as the
    # first optimiser step would), so compare with the projected source
    src.project()
    return path, src


def test_more_shears_keep_the_source_experts_and_copy_the_nearest_shear(source):
    path, src = source
    model = PoGMDM(n_shears=9)
    _warm_start(model, path)
    assert model.gamma.numel() == 37 and src.gamma.numel() == 21
    torch.testing.assert_close(model.P, src.P)
    torch.testing.assert_close(model.h, src.h)
    keys9, keys5 = _filter_keys(9, True), _filter_keys(5, True)
    spec9 = model.filter_spectra(64, 64)
    spec5 = src.filter_spectra(64, 64)
    eta9 = spec9.abs().flatten(1).amax(1)
    eta5 = spec5.abs().flatten(1).amax(1)
    for j, key in enumerate(keys9):
        if key in keys5:  # the same filter, the same expert
            i = keys5.index(key)
            torch.testing.assert_close(spec9[j], spec5[i])
            torch.testing.assert_close(model.gamma[j], src.gamma[i])
            torch.testing.assert_close(model.w_half[j], src.w_half[i], atol=1e-6, rtol=0)
        else:  # shear beyond +-2: the nearest source expert, at the same peak response gamma * eta
            c, b, s = key
            i = keys5.index((c, b, max(-2, min(2, s))))
            torch.testing.assert_close(model.w_half[j], src.w_half[i], atol=1e-6, rtol=0)
            torch.testing.assert_close(model.gamma[j] * eta9[j], src.gamma[i] * eta5[i], rtol=1e-4, atol=0)
            assert not torch.allclose(spec9[j], spec5[i])  # a genuinely new direction
    # the warm-started 9-shear prior denoises like its source rather than like an untrained model
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 48, 48)
    x[:, 12:36, 12:36] = 0.8
    noisy = x + 0.1 * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        err = {name: float(((noisy + 0.01 * m(noisy, 0.1)) - x).pow(2).mean())
               for name, m in (("src", src), ("warm", model), ("fresh", PoGMDM(n_shears=9)))}
    assert err["warm"] < err["fresh"]


def test_twenty_experts_into_twenty_one_keep_the_lowpass_initialisation(tmp_path):
    torch.manual_seed(0)
    src = PoGMDM(lowpass_expert=False)
    with torch.no_grad():
        src.gamma.mul_(1.5)
    stem = tmp_path / "src20"
    save_model(src, stem, model_type="pogmdm", config=src.config)
    model = PoGMDM()
    init_lowpass_gamma = model.gamma[-1].clone()
    _warm_start(model, stem.with_suffix(".safetensors"))
    torch.testing.assert_close(model.gamma[:20], src.gamma)
    torch.testing.assert_close(model.gamma[-1], init_lowpass_gamma)


def test_a_source_that_contradicts_its_config_is_refused(tmp_path):
    src = PoGMDM(n_shears=3)
    stem = tmp_path / "bad"
    save_model(src, stem, model_type="pogmdm", config=dict(src.config, n_shears=5))
    with pytest.raises(ValueError, match="n_shears=5"):
        _warm_start(PoGMDM(), stem.with_suffix(".safetensors"))
