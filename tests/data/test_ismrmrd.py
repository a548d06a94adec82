"""ISMRMRD raw data: files from Debian's ``ismrmrd-tools`` generator, read, prewhitened and reconstructed.

The generator (``ismrmrd_generate_cartesian_shepp_logan``) writes a Shepp-Logan phantom times birdcage
maps with 2x readout oversampling, ``-a R`` interleaved repetitions (frame ``a`` samples lines
``a, a + R, ...``) with ``-w`` calibration lines flagged ``ACQ_IS_PARALLEL_CALIBRATION[_AND_IMAGING]``,
complex noise of std ``-n`` per real part, and with ``-C`` a noise scan. It also stores the truth: the
phantom and the maps (``csm``), at the recon matrix, so that every test has an exact reference.
"""
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import torch

from bayesmri.data.inputs import detect_format, open_volume
from bayesmri.data.ismrmrd import read_ismrmrd
from bayesmri.metrics import psnr
from bayesmri.physics.fft import ifft2c

GEN = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
pytestmark = pytest.mark.skipif(GEN is None, reason="ismrmrd_generate_cartesian_shepp_logan is not installed "
                                "(Debian: apt-get install ismrmrd-tools; .ci/run installs it)")
M = 64


def generate(path, *args, matrix=M, noise=0.02):
    subprocess.run([GEN, "-m", str(matrix), "-c", "4", "-n", str(noise), *map(str, args), "-o", str(path)],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Accelerations 1 and 2 (16 calibration lines), without and with a noise scan."""
    d = tmp_path_factory.mktemp("ismrmrd")
    return {(a, noise): generate(d / f"a{a}{'_noise' if noise else ''}.h5", "-a", a, "-w", 16, *(["-C"] if noise else []))
            for a in (1, 2) for noise in (False, True)}


def truth(path):
    """The generator's phantom ``(H, W)`` and maps ``(C, H, W)`` in our axes (H = readout = ISMRMRD x)."""
    with h5py.File(path, "r") as f:
        ph, csm = f["dataset/phantom"][0], f["dataset/csm"][0]
    ph, csm = ph["real"] + 1j * ph["imag"], csm["real"] + 1j * csm["imag"]
    return ph.T.astype(np.complex64), np.swapaxes(csm, -1, -2).astype(np.complex64)


def test_format_layout_and_mask(files):
    for (a, noise), path in files.items():
        assert detect_format(path) == "ismrmrd"
        v = read_ismrmrd(path)
        assert v.shape == (a, 4, M, M)  # one image per interleaved frame; readout 128 -> 64
        assert [lab["repetition"] for lab in v.labels] == list(range(a))
        for i in range(a):
            lines = np.flatnonzero(v.masks[i])
            # frame i: lines i, i + a, ... plus the 16 calibration lines 24..39
            expect = sorted(set(range(i, M, a)) | set(range(24, 40)))
            assert lines.tolist() == expect
            assert v.num_acs[i] == 16
            off = np.setdiff1d(np.arange(M), lines)
            assert not np.abs(v.kspace[i][..., off]).any()
        assert v.noise["prewhitened"] == noise and (v.noise_std == 1.0 if noise else v.noise_std is None)
        assert v.orientation is not None and len(v.orientation) == a


def test_coil_images_match_the_generators_truth(files):
    """Readout placement, channel order, oversampling crop and FFT convention: the coil-combined
    zero-filled image of the fully sampled file is the phantom (up to the noise)."""
    for noise in (False, True):
        path = files[(1, noise)]
        v = read_ismrmrd(path)
        x, S = truth(path)
        if v.whitening is not None:
            S = np.einsum("dc,chw->dhw", v.whitening, S)
        img = ifft2c(torch.from_numpy(v.kspace[0])).numpy()
        est = (S.conj() * img).sum(0) / np.maximum((np.abs(S) ** 2).sum(0), 1e-12)
        p = float(psnr(torch.from_numpy(est)[None], torch.from_numpy(x)[None]))
        assert p > 25.0, p
        # the same image without the oversampling crop (twice the readout FOV): the crop keeps its centre
        v2 = read_ismrmrd(path, remove_oversampling=False)
        assert v2.shape[-2] == 2 * M
        full = ifft2c(torch.from_numpy(v2.kspace[0])).numpy()
        np.testing.assert_allclose(full[:, M // 2:M // 2 + M], img, atol=1e-4 * np.abs(img).max())


def test_prewhitened_noise_has_unit_variance(tmp_path):
    """Two repetitions of a static phantom differ by noise only: after whitening with the noise scan, the
    difference has covariance 2 I per complex sample (BART's convention), whatever the coil noise was."""
    path = generate(tmp_path / "rep.h5", "-r", 2, "-C", matrix=128, noise=0.05)
    v = read_ismrmrd(path)
    d = (v.kspace[0] - v.kspace[1]).reshape(4, -1)
    cov = d @ d.conj().T / d.shape[1] / 2
    # 256 noise samples per coil estimate the covariance to about 1/sqrt(256) = 6 %
    assert np.allclose(np.diag(cov).real, 1.0, atol=0.2), np.diag(cov)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.15
    raw = read_ismrmrd(path, prewhiten=False)
    draw = (raw.kspace[0] - raw.kspace[1]).reshape(4, -1)
    var = (np.abs(draw) ** 2).mean() / 2
    assert abs(var / (2 * 0.05 ** 2) - 1) < 0.1  # the generator's noise: std 0.05 per real part


def _edit(path, head=None, xml=None):
    with h5py.File(path, "r+") as f:
        if head is not None:
            ds = f["dataset/data"]
            raw = ds[()]
            head(raw["head"])
            ds[...] = raw
        if xml is not None:
            x = f["dataset/xml"]
            text = xml(x[0].decode())
            del f["dataset/xml"]
            f.create_dataset("dataset/xml", data=np.array([text.encode()], dtype=h5py.string_dtype()))


def test_dwell_time_and_receiver_bandwidth_scale_the_noise(files, tmp_path):
    """A noise scan at twice the imaging dwell time has half the noise variance; ISMRMRD's
    ``relativeReceiverNoiseBandwidth`` divides it further. Both rescale the whitened data exactly."""
    base = read_ismrmrd(files[(1, True)])
    p = tmp_path / "dwell.h5"
    shutil.copy(files[(1, True)], p)

    def slow_noise(h):
        noise = (h["flags"] & np.uint64(1 << 18)) != 0
        h["sample_time_us"][noise] = 10.0

    _edit(p, head=slow_noise)
    v = read_ismrmrd(p)
    assert v.noise["dwell_ratio"] == 2.0
    np.testing.assert_allclose(v.kspace, base.kspace / np.sqrt(2), rtol=1e-4, atol=1e-6 * np.abs(base.kspace).max())
    _edit(p, xml=lambda t: t.replace("<receiverChannels>", "<relativeReceiverNoiseBandwidth>0.5"
                                     "</relativeReceiverNoiseBandwidth>\n\t\t<receiverChannels>"))
    v = read_ismrmrd(p)
    assert v.noise["relative_receiver_noise_bandwidth"] == 0.5
    np.testing.assert_allclose(v.kspace, base.kspace / 2, rtol=1e-4, atol=1e-6 * np.abs(base.kspace).max())


def test_separate_calibration_lines_only_calibrate(files, tmp_path):
    p = tmp_path / "separate.h5"
    shutil.copy(files[(2, False)], p)
    _edit(p, xml=lambda t: t.replace("interleaved", "separate"))
    v = read_ismrmrd(p)
    assert v.attrs["acs_in_data"] is False
    for i in range(2):
        # the 8 calibration-only lines of each frame leave the data, and stay for the coil maps
        assert int(v.masks[i].sum()) == 32
        cal = np.flatnonzero(np.abs(v.calibration[i]).sum((0, 1)))
        assert set(range(24, 40)) <= set(cal.tolist())


def test_interleaved_frames_calibrate_without_acs(tmp_path):
    """TSENSE: frames of R=2 without calibration lines have no fully sampled centre; their average does,
    so ESPIRiT works and CG-SENSE recovers the phantom (weighted by the coil gain ESPIRiT leaves in it)."""
    from bayesmri.methods import run_method
    from bayesmri.data.recon_input import load_input

    path = generate(tmp_path / "tsense.h5", "-a", 2, "-w", 0, "-C")
    v = open_volume(path)
    assert v.calibration is not None and (np.abs(v.calibration).sum((1, 2)) > 0).all()
    data = load_input(path)
    res = run_method("sense", data.samples)
    x, S = truth(path)
    Sw = np.einsum("dc,chw->dhw", v.whitening, S)
    ref = np.abs(x) * np.sqrt((np.abs(Sw) ** 2).sum(0))
    for i, s in enumerate(data.samples):
        est = (res.mean[i] * s.scale).abs().numpy()
        a = float((est * ref).sum() / (est * est).sum())  # ESPIRiT's maps fix the scale only up to a constant
        p = float(psnr(torch.from_numpy(a * est)[None], torch.from_numpy(ref)[None]))
        assert p > 25.0, p


@pytest.mark.parametrize("case", ["no_group", "truncated", "non_cartesian", "3d", "reversed"])
def test_malformed_files_fail_with_one_line(case, files, tmp_path, capsys):
    from bayesmri.cli import main

    p = tmp_path / f"{case}.h5"
    shutil.copy(files[(1, False)], p)
    if case == "no_group":
        with h5py.File(p, "r+") as f:
            del f["dataset/data"]
        expect = "neither a fastMRI file"
    elif case == "truncated":
        def more(h):
            h["number_of_samples"][3] += 1
        _edit(p, head=more)
        expect = "acquisition 3 holds"
    elif case == "non_cartesian":
        _edit(p, xml=lambda t: t.replace(">cartesian<", ">radial<"))
        expect = "trajectory 'radial' is not supported"
    elif case == "3d":
        _edit(p, xml=lambda t: t.replace("<z>1</z>", "<z>8</z>", 1))
        expect = "3-D encoding"
    else:
        def rev(h):
            h["flags"][5] |= np.uint64(1 << 21)
        _edit(p, head=rev)
        expect = "ACQ_IS_REVERSE"
    rc = main(["recon", str(p), "--method", "zf", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and expect in lines[0], err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------
# against BART on the same data
# ---------------------------------------------------------------------------------------------------
def _bart_dims(t: torch.Tensor) -> np.ndarray:
    """Ours ``(C, H, W)`` -> BART ``(READ, PHS1, 1, COIL)``."""
    return np.transpose(t.numpy(), (1, 2, 0))[:, :, None, :]


@pytest.mark.parametrize("a", [1, 2])
@pytest.mark.parametrize("noise", [False, True], ids=["raw", "prewhitened"])
def test_zf_sense_tv_match_bart(files, a, noise):
    """Our zf/sense/tv on the ISMRMRD file (the generator's maps given as explicit maps, whitened with the
    data) against BART on the same converted k-space and maps; reference: the generator's phantom.
    zf is the same linear map (identical images); sense and tv at each toolkit's best of a small lambda
    grid (their data scalings differ) are within 1 dB, ours not worse."""
    from bayesmri.bart import bart, bart_available
    from bayesmri.methods import run_method
    from bayesmri.data.recon_input import load_input

    if not bart_available():
        pytest.skip("BART ('bart' binary) is not installed; .ci/run installs it")
    path = files[(a, noise)]
    data = load_input(path, maps=str(path))
    x = torch.from_numpy(truth(path)[0])[None].abs()
    s = data.samples[-1]  # the last frame: the other parity than frame 0 at R=2
    assert s.maps_source == "file"
    k, S = _bart_dims(s.kspace * s.scale), _bart_dims(s.maps_espirit)
    ours_zf = run_method("zf", [s]).mean[0] * s.scale
    bart_zf = torch.from_numpy(np.ascontiguousarray(bart("fmac -C -s 8", bart("fft -iu 3", k), S).reshape(M, M)))
    assert float((ours_zf - bart_zf).abs().max()) < 1e-5 * float(bart_zf.abs().max())
    grids = {"sense": ("-l2 -r {}", [0.003, 0.03, 0.3, 3], [1e-3, 3e-3, 1e-2]),
             "tv": ("-R T:3:0:{}", [0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10], [1e-3, 3e-3, 1e-2, 3e-2])}
    for method, (reg, bart_lams, our_lams) in grids.items():
        b = max(float(psnr(torch.from_numpy(np.abs(bart(f"pics -S -i 100 {reg.format(lam)}", k, S))
                                            .reshape(1, M, M)), x)) for lam in bart_lams)
        o = max(float(psnr((run_method(method, [s], options={"lam": lam}).mean * s.scale).abs(), x))
                for lam in our_lams)
        print(f"R={a} {'prewhitened' if noise else 'raw'} {method}: ours {o:.2f} dB, BART {b:.2f} dB")
        assert o >= b - 1.0, (method, o, b)
        assert o > 28.0
