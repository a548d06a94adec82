"""What ``bayesmri recon`` gives back (issue 24): retrospective undersampling with ``--mask``, ``--slices``,
the output geometry from the ISMRMRD header (readout oversampling removed, voxel size from the FOV),
full-resolution PNGs with colour bars and the richer ``metrics.json``.

Tiny files (64 x 64, 2 slices, 4 coils) and cheap methods (``zf``, ``sense``, ``cinn``), in-process.
"""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from bayesmri import io
from bayesmri.cli import main
from bayesmri.data.recon_input import RetrospectiveMask, load_input, parse_slices
from bayesmri.data.simulate import default_num_acs
from bayesmri.data.fastmri import image_geometry, make_ismrmrd_header, parse_ismrmrd_header, write_fastmri_h5
from bayesmri.physics.fft import fft2c
from bayesmri.physics.masks import apply_mask, make_mask

SIM = ["--split", "test", "--slices", "2", "--size", "64", "--coils", "4", "--snr", "30", "--seed", "1"]


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _row(folder, method):
    met = io.load_json(folder / "metrics.json")
    (pattern, row), = met[method].items()
    return pattern, row


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A fully sampled simulation and the same simulation written undersampled on GRO R=4, mask seed 3."""
    d = tmp_path_factory.mktemp("study")
    assert main(["simulate", *SIM, "--pattern", "full", "--out", str(d / "full.h5")]) == 0
    assert main(["simulate", *SIM, "--pattern", "gro", "--acceleration", "4", "--mask-seed", "3",
                 "--out", str(d / "und.h5")]) == 0
    return d


# ------------------------------------------------------------------------------------------ retrospective
def test_recon_mask_on_fully_sampled_equals_simulate_then_recon(files, tmp_path, capsys):
    full, und = files / "full.h5", files / "und.h5"
    # the simulated file holds exactly the mask recon --mask builds
    want = make_mask("gro", (64, 64), 4.0, num_acs=default_num_acs("gro", 64), seed=3)
    with h5py.File(und, "r") as f:
        np.testing.assert_array_equal(f["mask"][()].astype(np.float32), want.numpy())
    rc, out_a, err = _run(["recon", full, "--mask", "gro", "--acceleration", "4", "--mask-seed", "3",
                           "--method", "sense", "--out", tmp_path / "a", "--no-progress"], capsys)
    assert rc == 0, err
    assert "fully sampled" not in err  # no R=1 warning when a mask is asked for
    assert "mask: --mask gro R=4" in out_a and "reference: reconstruction_rss" in out_a
    rc, out_b, err = _run(["recon", und, "--method", "sense", "--out", tmp_path / "b", "--no-progress"], capsys)
    assert rc == 0, err
    assert "mask: the file's 'mask' dataset" in out_b
    a, b = io.load_npz(tmp_path / "a" / "sense.npz"), io.load_npz(tmp_path / "b" / "sense.npz")
    peak = np.abs(b["mean"]).max()
    # equal up to float32 rounding of the raw-unit k-space (the simulator stores k * scale)
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=0, atol=1e-4 * peak)
    (pa, ra), (pb, rb) = _row(tmp_path / "a", "sense"), _row(tmp_path / "b", "sense")
    assert pa == pb == "gro-r4"
    for key in ("psnr", "ssim", "nmse"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-4), key
    assert ra["mask"]["source"] == "option" and ra["mask"]["seed"] == 3 and ra["mask"]["acceleration"] == 4.0
    assert rb["mask"]["source"] == "file"
    # and the mask matters: another frame gives another reconstruction
    rc, _, err = _run(["recon", full, "--mask", "gro", "--mask-seed", "4", "--method", "sense",
                       "--out", tmp_path / "c", "--no-progress"], capsys)
    assert rc == 0, err
    c = io.load_npz(tmp_path / "c" / "sense.npz")
    assert np.abs(c["mean"] - b["mean"]).max() > 100 * 1e-4 * peak


def test_load_input_applies_the_mask_as_the_simulator_does(files):
    full = load_input(files / "full.h5", mask=RetrospectiveMask("gro", 4.0, None, 3))
    und = load_input(files / "und.h5")
    for s_f, s_u in zip(full.samples, und.samples):
        assert torch.equal(s_f.mask, s_u.mask)
        kf, ku = s_f.kspace * s_f.scale, s_u.kspace * s_u.scale
        assert torch.equal(kf == 0, ku == 0)
        assert float((kf - ku).abs().max()) <= 1e-5 * float(ku.abs().max())


def test_apply_mask_zeroes_exactly_the_unsampled_lines():
    k = torch.randn(3, 8, 10, dtype=torch.complex64) + 1
    m = torch.zeros(10)
    m[[0, 4, 5]] = 1
    y = apply_mask(k, m)
    assert torch.equal(y[..., [0, 4, 5]], k[..., [0, 4, 5]]) and int((y != 0).sum()) == 3 * 8 * 3
    m2 = torch.zeros(8, 10)
    m2[2, 3] = 1
    assert int((apply_mask(k, m2) != 0).sum()) == 3
    with pytest.raises(ValueError, match="mask must have shape"):
        apply_mask(k, torch.ones(9))


def _with_mask_dataset(src, dst, mask, *, zero):
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        if zero:
            f["kspace"][...] = f["kspace"][()] * mask
        f.create_dataset("mask", data=mask.astype(bool))
    return dst


def test_mask_dataset_on_fully_sampled_file_equals_the_zeroed_data(files, tmp_path, capsys):
    # issue 24: a mask dataset added to fully sampled k-space gave SENSE 30.43 dB, the same data zeroed 31.07:
    # the unmasked k-space reached ESPIRiT's calibration (here 26.70 vs 27.18 dB). Now the mask is applied.
    m = make_mask("gro", (64, 64), 4.0, num_acs=default_num_acs("gro", 64), seed=3).numpy()
    added = _with_mask_dataset(files / "full.h5", tmp_path / "added.h5", m, zero=False)
    zeroed = _with_mask_dataset(files / "full.h5", tmp_path / "zeroed.h5", m, zero=True)
    means, rows = {}, {}
    for name, src, extra in (("added", added, []), ("zeroed", zeroed, []),
                             ("option", files / "full.h5", ["--mask", "gro", "--mask-seed", "3"])):
        rc, out, err = _run(["recon", src, "--method", "sense", "--out", tmp_path / name, "--no-progress", *extra],
                            capsys)
        assert rc == 0, err
        assert "warning" not in err, err
        means[name] = io.load_npz(tmp_path / name / "sense.npz")["mean"]
        rows[name] = _row(tmp_path / name, "sense")
        if name == "added":
            assert "'mask' dataset, R=4, applied to the k-space" in out and "reference: reconstruction_rss" in out
    np.testing.assert_array_equal(means["added"], means["zeroed"])
    np.testing.assert_allclose(means["added"], means["option"], rtol=0, atol=1e-5 * np.abs(means["option"]).max())
    assert rows["added"][1]["psnr"] == pytest.approx(rows["option"][1]["psnr"], abs=1e-4)
    assert rows["added"][1]["mask"]["source"] == "file-applied" and rows["zeroed"][1]["mask"]["source"] == "file"
    # the simulator's attributes say "full" but the data are R=4: the key names the measured R, not "full"
    assert rows["added"][0] == rows["zeroed"][0] == "input-r4"


@pytest.mark.parametrize("pattern", ["gro", "uniform1d", "gaussian1d", "equispaced", "gaussian2d", "poisson"])
def test_every_pattern_runs_retrospectively(files, tmp_path, capsys, pattern):
    from bayesmri.physics.masks import MASK_PATTERNS

    assert pattern in MASK_PATTERNS
    rc, out, err = _run(["recon", files / "full.h5", "--mask", pattern, "--acceleration", "3", "--method", "zf",
                         "--slices", "0", "--out", tmp_path / "o", "--no-progress"], capsys)
    assert rc == 0, err
    p, row = _row(tmp_path / "o", "zf")
    assert p == f"{pattern}-r3" and abs(row["mask"]["acceleration"] - 3) < 0.2
    assert math.isfinite(row["psnr"]) and row["psnr"] < 45  # undersampled, not the R=1 result
    two_d = pattern in ("gaussian2d", "poisson")
    assert row["mask"]["dims"] == (2 if two_d else 1)
    assert ("not realisable in 2-D Cartesian imaging" in out) == two_d


def test_every_mask_pattern_is_tested():
    from bayesmri.physics.masks import MASK_PATTERNS

    params = test_every_pattern_runs_retrospectively.pytestmark[0].args[1]
    assert set(params) == set(MASK_PATTERNS)


def test_fully_sampled_without_mask_warns(files, tmp_path, capsys):
    with pytest.warns(UserWarning) as rec:
        rc, out, err = _run(["recon", files / "full.h5", "--method", "zf", "--out", tmp_path / "o",
                             "--no-progress"], capsys)
    assert rc == 0, err
    warn = [str(w.message) for w in rec]
    assert len(warn) == 1 and "fully sampled" in warn[0] and "R=1" in warn[0] and "--mask" in warn[0]
    assert "mask: the nonzero k-space" in out and "(fully sampled)" in out
    p, row = _row(tmp_path / "o", "zf")
    assert p == "full-r1" and row["mask"]["source"] == "kspace"


def test_mask_on_undersampled_file_and_stray_options_are_one_line(files, tmp_path, capsys):
    for argv, needle in ((["--mask", "gro"], "already undersampled"), (["--acceleration", "4"], "only apply with --mask"),
                         (["--mask", "spiral"], "unknown sampling pattern"),
                         (["--mask", "gro", "--acceleration", "0.5"], "--acceleration"),
                         (["--slices", "0,7"], "--slices")):
        rc, _, err = _run(["recon", files / "und.h5", *argv, "--out", tmp_path / "o", "--no-progress"], capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 1 and len(lines) == 1 and needle in lines[0], (argv, err)
    assert not (tmp_path / "o").exists()


def test_parse_slices():
    assert parse_slices("0,3,5-7", 8) == [0, 3, 5, 6, 7]
    assert parse_slices(" 2 , 1,1 ", 3) == [1, 2]
    assert parse_slices(None, 3) == [0, 1, 2]
    for bad in ("3-1", "a", "-1", "8", "1,,2", "0-8"):
        with pytest.raises(ValueError, match="--slices"):
            parse_slices(bad, 8)


def test_slices_pick_slices(files, tmp_path, capsys):
    rc, _, err = _run(["recon", files / "und.h5", "--method", "sense", "--out", tmp_path / "all", "--no-progress"],
                      capsys)
    assert rc == 0, err
    rc, _, err = _run(["recon", files / "und.h5", "--method", "sense", "--slices", "1", "--out", tmp_path / "one",
                       "--no-progress"], capsys)
    assert rc == 0, err
    one, every = io.load_npz(tmp_path / "one" / "sense.npz"), io.load_npz(tmp_path / "all" / "sense.npz")
    assert one["mean"].shape == (1, 64, 64) and list(one["slices"]) == [1]
    np.testing.assert_allclose(one["mean"][0], every["mean"][1], atol=1e-5)
    _, row = _row(tmp_path / "one", "sense")
    _, row_all = _row(tmp_path / "all", "sense")
    assert row["n_slices"] == 1 and row["per_slice"]["slice"] == [1]
    assert row["per_slice"]["psnr"][0] == pytest.approx(row_all["per_slice"]["psnr"][1], abs=1e-3)
    assert row_all["psnr"] == pytest.approx(np.mean(row_all["per_slice"]["psnr"]))


# ------------------------------------------------------------------------------------------------ outputs
def test_sampler_defaults_to_eight_samples_with_std_and_calibration(files, tmp_path, capsys, monkeypatch):
    from bayesmri.methods.outputs import STD_PNG_VMAX

    with pytest.raises(SystemExit):
        main(["recon", "--help"])
    assert "default: 8 for the sampling methods" in " ".join(capsys.readouterr().out.split())
    ranges = {}
    grid = io.save_image_grid_native

    def spy(path, images, titles=None, **kw):
        ranges[path.name] = kw.get("vmax")
        return grid(path, images, titles, **kw)

    monkeypatch.setattr(io, "save_image_grid_native", spy)
    rc, out, err = _run(["recon", files / "und.h5", "--method", "cinn", "--slices", "0", "--out", tmp_path / "o",
                         "--no-progress"], capsys)
    assert rc == 0, err
    # the std PNG's colour scale is the same for every method and run, not this result's own maximum
    assert ranges["cinn_std.png"] == STD_PNG_VMAX
    _, row = _row(tmp_path / "o", "cinn")
    assert row["n_samples"] == 8
    cal = row["calibration"]
    assert cal["n_samples"] == 8 and cal["p_gain_reference_db"] == pytest.approx(10 * math.log10(16 / 9))
    assert {"p_gain_db", "std_ratio", "coverage", "std_error_correlation"} <= set(cal)
    assert row["versions"]["torch"] == torch.__version__ and "bayesmri" in row["versions"]
    assert row["settings"]["samples"] == 8 and row["settings"]["method"] == "cinn"
    # the std PNG is a colour map at full resolution (not grey, not shrunk)
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "o" / "cinn_std.png").convert("RGB")).astype(int)
    assert png.shape[1] >= 64 and png.shape[0] >= 64
    assert np.abs(png[..., 0] - png[..., 2]).max() > 60  # magma: red and blue differ; grey would not
    grey = np.asarray(Image.open(tmp_path / "o" / "cinn_mean.png").convert("RGB")).astype(int)
    assert grey.shape[1] >= 64


def test_full_resolution_grid_places_every_pixel(tmp_path):
    from PIL import Image

    img = np.zeros((40, 50))
    img[::2, ::2] = 1.0  # a checkerboard survives only if nothing is resampled
    p = io.save_image_grid_native(tmp_path / "g.png", [img, img], ["a", "b"], label="x")
    a = np.asarray(Image.open(p).convert("L")).astype(int)
    # the first image sits below its title line (8 px margin + 18 px title), 8 px from the left edge
    patch = a[26:66, 8:58]
    assert (patch[::2, ::2] > 250).all() and (patch[1::2, :] < 5).all() and (patch[:, 1::2] < 5).all()
    assert a.shape[1] >= 2 * 50 and a.shape[0] >= 40


def _oversampled(path, S=2, C=4, N=48, fov=(240.0, 120.0, 3.0)):
    """Fully sampled k-space of 2N x N (readout x phase) whose object lies in the central N x N."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 2 * N), torch.linspace(-1, 1, N), indexing="ij")
    obj = ((2 * yy) ** 2 + xx**2 < 0.7).to(torch.float32) * (1 + 0.3 * torch.cos(6 * xx))
    maps = torch.stack([torch.exp(1j * (c + 1) * 0.5 * (xx + yy)) * (1.2 + 0.2 * c * xx) for c in range(C)])
    noise = 0.01 * torch.randn(S, C, 2 * N, N, generator=g, dtype=torch.complex64)
    k = fft2c((maps * obj).to(torch.complex64).expand(S, C, 2 * N, N)) + noise
    header = make_ismrmrd_header((2 * N, N, 1), (N, N, 1), encoded_fov_mm=fov,
                                 recon_fov_mm=(fov[0] / 2, fov[1], fov[2]))
    write_fastmri_h5(path, k, recon_size=(N, N), header=header)
    return path


def test_oversampled_file_comes_back_at_recon_matrix_with_header_geometry(tmp_path, capsys):
    import nibabel as nib

    f = _oversampled(tmp_path / "os.h5")
    rc, out, err = _run(["recon", f, "--mask", "gro", "--acceleration", "2", "--method", "sense",
                         "--out", tmp_path / "o", "--no-progress"], capsys)
    assert rc == 0, err
    nii = nib.load(str(tmp_path / "o" / "sense_mean.nii.gz"))
    assert nii.shape == (48, 48, 2)  # readout 96 -> 48: oversampling removed
    # the affine's voxel sizes times the matrix give the header's recon FOV (120 x 120 mm, 3 mm slices)
    np.testing.assert_allclose(np.diag(nii.affine)[:3], [2.5, 2.5, 3.0])
    np.testing.assert_allclose(np.diag(nii.affine)[:3] * [48, 48, 1], [120.0, 120.0, 3.0])
    assert io.load_npz(tmp_path / "o" / "sense.npz")["mean"].shape == (2, 48, 48)
    _, row = _row(tmp_path / "o", "sense")
    assert row["geometry"] == {"matrix": [48, 48], "voxel_mm": [2.5, 2.5, 3.0], "source": "reconSpace"}
    # the crop is centred on the object: the image agrees with fastMRI's reference (RSS, centre crop)
    assert row["psnr"] > 30, row["psnr"]


def test_image_geometry_from_header():
    hdr = parse_ismrmrd_header(make_ismrmrd_header((640, 368, 1), (320, 320, 1), encoded_fov_mm=(280, 161, 4.5),
                                                   recon_fov_mm=(140, 140, 4.5)))
    g = image_geometry(hdr, (15, 16, 640, 368))
    assert g.matrix == (320, 320)
    np.testing.assert_allclose(g.voxel_mm, (0.4375, 0.4375, 4.5))
    np.testing.assert_allclose(np.diag(g.affine), (0.4375, 0.4375, 4.5, 1.0))
    assert g.source == "reconSpace"
    # a recon matrix larger than the k-space cannot be reached by a crop: the k-space size stays
    assert image_geometry(hdr, (1, 300, 300)).matrix == (300, 300)
    no_recon_fov = dict(hdr, recon_fov_mm=None)
    g = image_geometry(no_recon_fov, (1, 640, 368))
    assert g.source == "encodedSpace" and g.voxel_mm[0] == pytest.approx(280 / 640)
    g = image_geometry(dict(hdr, recon_fov_mm=None, encoded_fov_mm=(0.0, 1.0, 1.0)), (1, 640, 368))
    assert g.source == "default" and g.voxel_mm == (1.0, 1.0, 1.0)


@pytest.mark.filterwarnings("ignore:.*fully sampled")
def test_reference_larger_than_the_header_recon_matrix_is_still_scored(tmp_path, capsys):
    # a hand-made header whose recon matrix (32 x 32) is smaller than the file's reference (48 x 48)
    k = torch.randn(1, 2, 48, 48, generator=torch.Generator().manual_seed(0), dtype=torch.complex64)
    header = make_ismrmrd_header((48, 48, 1), (32, 32, 1))
    write_fastmri_h5(tmp_path / "h.h5", k, recon_size=(48, 48), header=header)
    rc, _, err = _run(["recon", tmp_path / "h.h5", "--method", "zf", "--out", tmp_path / "o", "--no-progress"], capsys)
    assert rc == 0, err
    _, row = _row(tmp_path / "o", "zf")
    assert row["geometry"]["matrix"] == [48, 48] and math.isfinite(row["psnr"])
