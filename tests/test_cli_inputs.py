"""``bayesmri recon`` in a BART pipeline (cfl in and out, ``--maps``) and on single-coil data."""
import shutil
import subprocess

import numpy as np
import pytest
import torch

from bayesmri import io
from bayesmri.bart import bart_available, readcfl, writecfl
from bayesmri.cli import main

needs_bart = pytest.mark.skipif(not bart_available(), reason="BART ('bart' binary) is not installed; .ci/run installs it")
N = 64


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _bart(*args, cwd):
    exe = shutil.which("bart")
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def bart_files(tmp_path_factory):
    """Files written by BART itself: 4-coil phantom k-space undersampled 2x (every other PHS1 line plus 16
    central ones), two copies along SLICE (dim 13), and ``ecalib`` maps."""
    if not bart_available():
        pytest.skip("BART ('bart' binary) is not installed; .ci/run installs it")
    d = tmp_path_factory.mktemp("bart")
    _bart("phantom", "-x", N, "-k", "-s", 4, "kfull", cwd=d)
    mask = np.zeros((1, N), np.complex64)
    mask[0, ::2] = 1
    mask[0, N // 2 - 8:N // 2 + 8] = 1
    writecfl(d / "pattern", mask)
    _bart("fmac", "kfull", "pattern", "ku", cwd=d)
    _bart("join", 13, "ku", "ku", "ku2", cwd=d)
    _bart("ecalib", "-m1", "-r", 16, "ku", "maps", cwd=d)
    return d


def test_cfl_round_trip_with_bart(bart_files, tmp_path, capsys):
    """BART's k-space and maps in, our cfl out, read back by BART: our zero-filled image is BART's
    coil-combined inverse FFT (``bart nrmse -t`` fails the command otherwise), with the input's SLICE dim."""
    d = bart_files
    out = tmp_path / "o"
    rc, stdout, err = _run(["recon", d / "ku2.cfl", "--maps", d / "maps.cfl", "--method", "zf", "--array-format",
                            "cfl", "--out", out, "--no-progress"], capsys)
    assert rc == 0, err
    assert "BART cfl, 2 image(s) along BART dim(s) 13" in stdout
    dims = (out / "zf_mean.hdr").read_text().splitlines()[1].split()
    assert dims[:2] == [str(N), str(N)] and dims[13] == "2"
    _bart("fft", "-iu", 3, "ku2", tmp_path / "img", cwd=d)
    _bart("fmac", "-C", "-s", 8, tmp_path / "img", "maps", tmp_path / "zf_bart", cwd=d)
    _bart("nrmse", "-t", "1e-5", tmp_path / "zf_bart", out / "zf_mean", cwd=d)
    # the NIfTI holds the same images, in the normalised units (95th percentile of the zero-filled RSS = 1)
    nii = io.load_nifti(out / "zf_mean.nii.gz")
    cfl = np.abs(readcfl(out / "zf_mean")).reshape(N, N, 2).transpose(2, 0, 1)
    ratio = cfl.max(axis=(1, 2)) / nii.max(axis=(1, 2))
    np.testing.assert_allclose(nii * ratio[:, None, None], cfl, rtol=1e-4, atol=1e-5 * cfl.max())


def test_maps_from_npy_equal_maps_from_cfl(bart_files, tmp_path, capsys):
    d = bart_files
    maps = readcfl(d / "maps")  # (N, N, 1, 4)
    np.save(tmp_path / "maps.npy", np.transpose(maps.reshape(N, N, 4), (2, 0, 1)))
    res = {}
    for name, spec in (("cfl", d / "maps.cfl"), ("npy", tmp_path / "maps.npy")):
        rc, _, err = _run(["recon", d / "ku.cfl", "--maps", spec, "--method", "sense", "--out", tmp_path / name,
                           "--no-progress"], capsys)
        assert rc == 0, err
        res[name] = io.load_npz(tmp_path / name / "sense.npz")["mean"]
    np.testing.assert_allclose(res["npy"], res["cfl"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["coils", "two_sets", "missing", "npy_shape"])
def test_bad_maps_fail_with_one_line(case, bart_files, tmp_path, capsys):
    d = bart_files
    if case == "coils":
        _bart("phantom", "-x", N, "-S", 2, tmp_path / "m2", cwd=d)
        spec, expect = tmp_path / "m2.cfl", "expected (4, 64, 64)"
    elif case == "two_sets":
        _bart("ecalib", "-m2", "-r", 16, "ku", tmp_path / "m_two", cwd=d)
        spec, expect = tmp_path / "m_two.cfl", "2 sets of maps along MAPS"
    elif case == "missing":
        spec, expect = tmp_path / "nope.npy", "no such file"
    else:
        np.save(tmp_path / "m.npy", np.ones((4, N, N // 2), np.complex64))
        spec, expect = tmp_path / "m.npy", "shape (4, 64, 32)"
    rc, _, err = _run(["recon", d / "ku.cfl", "--maps", spec, "--method", "zf", "--out", tmp_path / "o"], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and expect in lines[0], err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def single_coil(tmp_path_factory):
    """A fully sampled single-coil BART k-space (``READ x PHS1``) of a built-in test slice (no BART needed)."""
    from bayesmri.data import load_slices
    from bayesmri.physics.fft import fft2c

    x = load_slices("test", N)[40].to(torch.complex64)
    path = tmp_path_factory.mktemp("single") / "k1"
    writecfl(path, fft2c(x).numpy())
    return path


def test_single_coil_reconstructs_with_zf_tv_pula(single_coil, tmp_path, capsys):
    """One coil: maps of 1 (no ESPIRiT); a retrospective GRO R=2 study scores every method."""
    psnr = {}
    for m, extra in (("zf", []), ("tv", []), ("pula", ["--samples", "2", "--opt", "n_levels=20"])):
        out = tmp_path / m
        rc, stdout, err = _run(["recon", f"{single_coil}.cfl", "--method", m, "--mask", "gro", "--acceleration", 2,
                                "--out", out, "--no-progress", *extra], capsys)
        assert rc == 0, err
        row = next(iter(io.load_json(out / "metrics.json")[m].values()))
        assert row["settings"]["input_info"]["format"] == "cfl"
        psnr[m] = row["psnr"]
        arrays = io.load_npz(out / f"{m}.npz")
        assert arrays["mean"].shape == (1, N, N) and np.isfinite(arrays["mean"]).all()
    assert (tmp_path / "pula" / "pula_std.nii.gz").exists()
    assert psnr["tv"] > psnr["zf"] + 1.0 and psnr["pula"] > psnr["zf"] + 1.0, psnr
