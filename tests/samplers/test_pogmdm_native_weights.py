"""The joint PoGMDM method picks its shipped weights by image size (as the score prior does)."""
import pytest
import torch


def test_default_weights_by_size():
    from bayesmri.priors.pogmdm import default_pogmdm_weights

    assert default_pogmdm_weights((64, 64)) == "pogmdm_mri"
    assert default_pogmdm_weights((1, 95, 320)) == "pogmdm_mri"
    assert default_pogmdm_weights((96, 96)) == "pogmdm_native"
    assert default_pogmdm_weights((8, 320, 224)) == "pogmdm_native"


def test_shipped_native_weights_load_and_differ_from_the_64px_ones():
    from bayesmri.priors.pogmdm import PoGMDM, load_pogmdm
    from bayesmri.priors.loading import load_model

    new, old = load_pogmdm("pogmdm_native"), load_pogmdm("pogmdm_mri")
    assert isinstance(new, PoGMDM) and new.num_parameters() == old.num_parameters() == 1642
    assert not torch.allclose(new.w_half, old.w_half)
    meta = load_model("pogmdm_native").meta
    assert meta["prior"]["data"] == "native" and meta["training"]["steps"] > 0


def test_method_uses_the_size_rule(monkeypatch):
    import bayesmri.methods.pogmdm as pj

    seen = []
    real = pj._default_prior

    def spy(device, shape=(64, 64)):
        seen.append(tuple(shape))
        return real(device, shape)

    monkeypatch.setattr(pj, "_default_prior", spy)
    from bayesmri.data import simulate_acquisition
    from bayesmri.physics.masks import make_mask

    x = torch.zeros(96, 96)
    x[30:66, 30:66] = 1.0
    s = simulate_acquisition(x, mask=make_mask("gro", (96, 96), 4), ncoils=2, snr_db=30, seed=0)
    res = pj.pogmdm_joint_method(s, n_samples=1, generator=0, n_steps=6, map_steps=0)
    assert seen == [(96, 96)] and res.mean.shape == (96, 96)
    assert pj._PRIOR_CACHE[("pogmdm_native", "cpu")] is pj._default_prior("cpu", (96, 96))
    assert pj._default_prior("cpu", (64, 64)) is not pj._default_prior("cpu", (96, 96))


def test_fixed_true_maps_are_kept():
    from bayesmri.data import simulate_acquisition
    from bayesmri.physics.masks import make_mask
    from bayesmri.methods.pogmdm import pogmdm_joint_method

    x = torch.zeros(32, 32)
    x[8:24, 8:24] = 1.0
    s = simulate_acquisition(x, mask=make_mask("gro", (32, 32), 4), ncoils=2, snr_db=30, seed=0)
    res = pogmdm_joint_method(s, n_samples=1, generator=0, n_steps=6, map_steps=0, fixed_maps="true")
    S = s.maps("true")
    S = S / (S.abs() ** 2).sum(0, keepdim=True).sqrt().clamp_min(1e-12)
    torch.testing.assert_close(res.diagnostics["coil_maps"], S.to(res.diagnostics["coil_maps"].dtype))
    free = pogmdm_joint_method(s, n_samples=1, generator=0, n_steps=6, map_steps=0)
    assert not torch.allclose(free.diagnostics["coil_maps"], res.diagnostics["coil_maps"], atol=1e-3)
