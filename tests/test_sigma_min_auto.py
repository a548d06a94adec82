"""pULA's lowest noise level comes from the prior in use (``sigma_min="auto"``, issue #18).

``score_native`` was validated at 0.01 on real-size val slices, ``score_small64`` at 0.01 at 64 x 64 (pULA,
Score-MRI); annealed ULA has no value for ``score_small64`` and falls back to 0.03. The
value lives in each weights config (``"sampling"``) and is what the sampler runs with unless the caller
sets it. These tests fail if the config is not read, if the wrong prior's value is used, or if an
explicit option does not win.
"""
import copy

import pytest

from bayesmri.methods import get_method
from bayesmri.methods.diffusion import DEFAULTS, SIGMA_MIN_FALLBACK, prior_sampling_default
from bayesmri.priors.registry import load_prior


@pytest.fixture(scope="module")
def sample64():
    from bayesmri.data.simulate import simulate_builtin

    return simulate_builtin("val", 1, "gro", 4.0, 8, 30.0, 0, 64)[0]


def _run(sample, method="pula", **opts):
    r = get_method(method)(sample, n_samples=1, generator=0, maps="true", n_levels=3, **opts)
    return r.diagnostics["settings"]["sigma_min"]


def test_default_is_auto_and_read_from_config():
    assert all(DEFAULTS[m]["sigma_min"] == "auto" for m in ("pula", "score-mri", "ula-annealed"))
    small = load_prior("score_small64", (64, 64), "cpu")
    native = load_prior("score_native", (128, 128), "cpu")
    assert prior_sampling_default(small, "pula", "sigma_min", None) == 0.01
    assert prior_sampling_default(small, "ula-annealed", "sigma_min", SIGMA_MIN_FALLBACK) == SIGMA_MIN_FALLBACK
    assert prior_sampling_default(native, "pula", "sigma_min", None) == 0.01
    assert prior_sampling_default(object(), "pula", "sigma_min", 0.5) == 0.5  # no config: the fallback


def test_the_prior_in_use_sets_sigma_min(sample64):
    assert _run(sample64) == 0.01  # 64 px: score_small64
    model = copy.deepcopy(load_prior("score_small64", (64, 64), "cpu"))
    model.meta = dict(model.meta, sampling={"pula": {"sigma_min": 0.02}})
    assert _run(sample64, prior=model) == 0.02
    model.meta = {k: v for k, v in model.meta.items() if k != "sampling"}
    assert _run(sample64, prior=model) == SIGMA_MIN_FALLBACK
    assert _run(sample64, prior=model, sigma_min=0.04) == 0.04  # an explicit option wins


@pytest.mark.parametrize("method", ["pula", "score-mri", "ula-annealed"])
def test_real_size_input_gets_score_native_value(method):
    from bayesmri.data.simulate import simulate_builtin

    s = simulate_builtin("val", 1, "gro", 4.0, 4, 30.0, 0, 128)[0]
    assert _run(s, method) == 0.01
    small = simulate_builtin("val", 1, "gro", 4.0, 4, 30.0, 0, 64)[0]
    expected = 0.01 if method in ("pula", "score-mri") else SIGMA_MIN_FALLBACK
    assert _run(small, method) == expected  # score_small64's value or the fallback


def test_bad_sigma_min_is_one_clear_error(sample64):
    with pytest.raises(ValueError, match="sigma_min must be"):
        _run(sample64, sigma_min=5.0)
