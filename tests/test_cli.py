"""The `bayesmri` CLI: --help, simulate -> recon round trip, demo schema, and clean failures."""
import math

import numpy as np
import pytest

from bayesmri import io
from bayesmri.cli import main

SCHEMA_KEYS = {"psnr", "ssim", "nmse", "cpsnr", "time_per_sample_s", "nfe", "n_slices", "n_samples"}


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_subcommands_and_methods(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "simulate", "recon"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["recon", "--help"])
    out = capsys.readouterr().out
    for m in ("zf", "sense", "tv", "l1wav"):
        assert m in out


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "sim.h5"
    rc = main(["simulate", "--split", "test", "--slices", "2", "--pattern", "gro", "--acceleration", "4",
               "--coils", "4", "--snr", "30", "--seed", "1", "--size", "64", "--out", str(path)])
    assert rc == 0 and path.exists()
    return path


def test_recon_tv_beats_zero_filled_on_simulated_file(simulated, tmp_path, capsys):
    psnr = {}
    for m in ("zf", "tv"):
        out = tmp_path / m
        rc, stdout, err = _run(["recon", "--method", m, simulated, "--out", out, "--no-progress"], capsys)
        assert rc == 0, err
        met = io.load_json(out / "metrics.json")
        row = next(iter(met[m].values()))
        assert {"psnr", "ssim", "nmse", "time_per_sample_s", "nfe", "n_slices", "n_samples"} <= set(row)
        assert row["n_slices"] == 2 and row["n_samples"] == 1
        psnr[m] = row["psnr"]
        stack = io.load_nifti(out / f"{m}_mean.nii.gz")
        arrays = io.load_npz(out / f"{m}.npz")
        assert stack.shape == (2, 64, 64)
        np.testing.assert_allclose(stack, np.abs(arrays["mean"]), rtol=1e-5, atol=1e-6)
        assert (out / f"{m}_mean.png").stat().st_size > 0
    assert psnr["tv"] > psnr["zf"] + 2.0, psnr


def test_recon_h5_output(simulated, tmp_path, capsys):
    rc, _, err = _run(["recon", "--method", "sense", simulated, "--out", tmp_path / "o", "--array-format", "h5"], capsys)
    assert rc == 0, err
    arrays, attrs = io.load_h5(tmp_path / "o" / "sense.h5")
    assert arrays["mean"].shape == (2, 64, 64) and attrs["method"] == "sense"


@pytest.mark.parametrize("case", ["missing", "not_hdf5", "unknown_method", "bad_samples"])
def test_recon_bad_input_fails_cleanly(case, simulated, tmp_path, capsys):
    out = tmp_path / "out"
    src, method, extra = simulated, "zf", []
    if case == "missing":
        src = tmp_path / "nope.h5"
    elif case == "not_hdf5":
        src = tmp_path / "text.h5"
        src.write_text("this is not hdf5\n")
    elif case == "unknown_method":
        method = "magic"
    else:
        extra = ["--samples", "0"]
    rc, _, err = _run(["recon", "--method", method, src, "--out", out, *extra], capsys)
    assert rc != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "error" in lines[0], err
    if case == "unknown_method":
        assert "available methods: " in lines[0] and "tv" in lines[0] and "l1wav" in lines[0]
    if case == "not_hdf5":
        assert "HDF5" in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["text.h5"] if case == "not_hdf5" else [])


def test_simulate_bad_option_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "x.h5"
    rc, _, err = _run(["simulate", "--pattern", "spiral", "--size", "64", "--slices", "1", "--out", out], capsys)
    assert rc != 0 and "spiral" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_demo_tiny_writes_schema_and_tv_beats_zf(tmp_path, capsys):
    out = tmp_path / "demo"
    rc, stdout, err = _run(["demo", "--out", out, "--methods", "zf,tv", "--slices", "1", "--size", "64",
                            "--no-progress"], capsys)
    assert rc == 0, err
    met = io.load_json(out / "metrics.json")
    assert set(met) == {"zf", "tv"}
    for m, per in met.items():
        assert set(per) == {"gro-r4", "poisson-r8"}
        for row in per.values():
            assert set(row) == SCHEMA_KEYS | {"per_slice"}
            assert set(row["per_slice"]) == {"psnr", "ssim", "nmse", "cpsnr"} and len(row["per_slice"]["psnr"]) == 1
            assert all(isinstance(row[k], int) for k in ("nfe", "n_slices", "n_samples"))
            assert all(isinstance(row[k], float) and math.isfinite(row[k]) for k in ("psnr", "ssim", "nmse", "cpsnr"))
            assert row["n_slices"] == 1 and row["n_samples"] == 1 and row["time_per_sample_s"] > 0
    for pat in ("gro-r4", "poisson-r8"):
        assert met["tv"][pat]["psnr"] > met["zf"][pat]["psnr"] + 1.0
        assert (out / "figures" / pat / "tv_error.png").exists()
    # the printed table has a row per method and pattern
    rows = [ln.split() for ln in stdout.splitlines()]
    assert sum(1 for r in rows if r[:2] in (["gro-r4", "tv"], ["poisson-r8", "zf"])) == 2
    html = (out / "report.html").read_text()
    assert "gro-r4" in html and "poisson-r8" in html and 'src="http' not in html


def test_demo_unknown_method(tmp_path, capsys):
    rc, _, err = _run(["demo", "--out", tmp_path / "d", "--methods", "zf,nosuch", "--no-progress"], capsys)
    assert rc != 0 and "nosuch" in err and "available methods: zf" in err
    assert not (tmp_path / "d").exists()


def test_method_registry_contract():
    import torch

    from bayesmri import methods
    from bayesmri.data.simulate import simulate_builtin

    names = methods.available_methods()
    assert names[:4] == ["zf", "sense", "tv", "l1wav"]
    with pytest.raises(ValueError, match="available methods: zf, sense, tv, l1wav"):
        methods.get_method("nosuch")
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("tv")(lambda sample, **kw: None)
    with pytest.raises(ValueError, match="identifier"):
        methods.register_method("a,b")
    sample = simulate_builtin("test", 1, "gro", 4, 4, 30.0, 0, 64)[0]
    with pytest.raises(ValueError, match="unknown option"):
        methods.get_method("tv")(sample, bogus=1)
    res = methods.get_method("zf")(sample, maps="true")
    # zero-filled is the coil combination S^H F^H y of the measured data, one deterministic sample
    op = sample.operator("true")
    torch.testing.assert_close(res.mean, op.A_adjoint(sample.y)[0])
    assert res.samples.shape == (1, 64, 64) and res.std is None and res.nfe == 0


def test_demo_skips_a_failing_method_only_when_asked(tmp_path, capsys):
    from bayesmri import methods
    from bayesmri.demo import run_demo

    @methods.register_method("broken-test", "always fails")
    def _broken(sample, **kw):
        raise RuntimeError("no weights installed")

    try:
        met = run_demo(tmp_path / "a", ["zf", "broken-test"], n_slices=1, size=64, progress=False,
                       skip_failures=True)
        assert set(met) == {"zf"} and set(io.load_json(tmp_path / "a" / "metrics.json")) == {"zf"}
        out = capsys.readouterr().out
        assert "skipped broken-test: RuntimeError: no weights installed" in out
        assert "no weights installed" in (tmp_path / "a" / "report.html").read_text()
        with pytest.raises(RuntimeError, match="no weights"):
            run_demo(tmp_path / "b", ["zf", "broken-test"], n_slices=1, size=64, progress=False)
        assert not (tmp_path / "b").exists()
    finally:
        methods.registry._REGISTRY.pop("broken-test", None)


def test_run_method_forwards_maps_and_options_through_kwargs():
    """A method that forwards ``**options`` must get the maps its result is scored against."""
    from bayesmri import methods
    from bayesmri.methods import run_method
    from bayesmri.data.simulate import simulate_builtin

    seen = {}

    @methods.register_method("kwargs-test", "records its options")
    def _rec(sample, *, n_samples=1, generator=None, device="cpu", progress=False, **options):
        seen.update(options)
        return methods.get_method("zf")(sample, maps=options["maps"])

    try:
        sample = simulate_builtin("test", 1, "gro", 4, 4, 30.0, 0, 64)[0]
        run_method("kwargs-test", [sample], maps="true", options={"n_levels": 3})
        assert seen == {"maps": "true", "n_levels": 3}
    finally:
        methods.registry._REGISTRY.pop("kwargs-test", None)


def test_default_demo_runs_every_method_but_the_excluded_ones_which_stay_reachable():
    from bayesmri import methods
    from bayesmri.demo import DEFAULT_SIZE, DEMO_EXCLUDED, demo_methods

    default = demo_methods(None)
    assert set(default) | set(DEMO_EXCLUDED) == set(methods.available_methods())
    assert not set(default) & set(DEMO_EXCLUDED) and "pula" in default and "pogmdm-joint" in default
    assert demo_methods("ula-annealed") == ["ula-annealed"]
    assert DEFAULT_SIZE >= 128  # issue 18: the demo runs at a real size
