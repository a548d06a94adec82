"""Every registered method returns through the one SamplerResult convention (issue #20, item 4).

A method run on one slice returns ``samples (P, H, W)`` complex, ``mean (H, W)``; a sampling method's ``std``
is :meth:`SamplerResult.from_samples`' (the one posterior std of the library), a deterministic method's is
None. A method that built its own summaries or kept a batch axis would fail here.
"""
import pytest
import torch

from bayesmri.methods import available_methods, method_info, preset_options, run_method
from bayesmri.samplers.base import SamplerResult

#: Cheaper still than the demo preset: a handful of levels is enough to check shapes and summaries.
TINY = {"pula": dict(n_levels=2), "ula-annealed": dict(n_levels=2), "score-mri": dict(n_levels=3),
        "pogmdm-joint": dict(n_steps=10, map_steps=2)}


@pytest.fixture(scope="module")
def sample():
    from bayesmri.data.simulate import simulate_builtin

    return simulate_builtin("val", 1, "gro", 4.0, 8, 30.0, 0, 64)[0]  # the flows' weights: 64 x 64, 8 coils


@pytest.mark.parametrize("name", available_methods())
def test_every_method_returns_one_result_convention(name, sample):
    info = method_info(name)
    P = 3 if info.stochastic else 1
    opts = dict(preset_options(name, "demo"), **TINY.get(name, {}))
    r = info.fn(sample, n_samples=P, generator=0, **opts)
    H, W = sample.img_shape
    assert isinstance(r, SamplerResult)
    assert tuple(r.samples.shape) == (P, H, W) and r.samples.is_complex(), (name, r.samples.shape, r.samples.dtype)
    assert tuple(r.mean.shape) == (H, W)
    if not info.stochastic:
        assert r.std is None and torch.equal(r.samples[0], r.mean)
        return
    ref = SamplerResult.from_samples(r.samples)
    assert torch.equal(r.std, ref.std), name  # the one std definition, not a method's own
    assert torch.equal(r.std_magnitude, ref.std_magnitude), name
    if name != "pogmdm-joint" or opts.get("estimate", "mmse") == "mmse":
        torch.testing.assert_close(r.mean, ref.mean)
    assert r.nfe >= 1 and r.wall_time > 0


def test_run_method_stacks_slices_as_p_s_h_w(sample):
    r = run_method("pula", [sample, sample], n_samples=2, seed=0, maps="true", options=TINY["pula"])
    H, W = sample.img_shape
    assert tuple(r.samples.shape) == (2, 2, H, W) and tuple(r.mean.shape) == tuple(r.std.shape) == (2, H, W)
    assert torch.equal(r.std[1], SamplerResult.from_samples(r.samples[:, 1]).std)
