"""fastMRI reader, writer and Wen et al.'s multi-coil preprocessing on small synthetic files."""
import os

import h5py
import numpy as np
import pytest
import torch

from bayesmri.data import SimulatedBrainDataset
from bayesmri.data.fastmri import (FastMRIDataset, center_crop, preprocess_multicoil, read_fastmri_h5,
                                   write_fastmri_h5)
from bayesmri.physics import fft2c, ifft2c
from bayesmri.physics.coils import rss

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def kspace12():
    """(3, 12, 96, 64) multi-coil k-space: 64x64 brains, readout oversampled 1.5x (zero-padded rows)."""
    ds = SimulatedBrainDataset("test", size=64, pattern="full", ncoils=12, snr_db=40, indices=[50, 60, 70])
    k = torch.stack([ds[i].kspace for i in range(3)])
    return fft2c(torch.nn.functional.pad(ifft2c(k), (0, 0, 16, 16)))


@pytest.fixture()
def knee_file(tmp_path, kspace12):
    return write_fastmri_h5(tmp_path / "file_knee_1.h5", kspace12, recon_size=(48, 48))


def test_multicoil_round_trip(knee_file, kspace12):
    v = read_fastmri_h5(knee_file)
    assert v.multicoil and v.shape == (3, 12, 96, 64) and v.num_slices == 3
    assert v.header["encoded_matrix"][:2] == (96, 64) and v.header["recon_matrix"][:2] == (48, 48)
    assert v.attrs["acquisition"] == "CORPD_FBK"
    assert torch.equal(v.read_slice(1), kspace12[1])
    with h5py.File(knee_file, "r") as f:
        assert f["kspace"].dtype == np.complex64
        rec = f["reconstruction_rss"][()]
        assert rec.shape == (3, 48, 48)
        assert np.isclose(f.attrs["max"], rec.max())
    expect = center_crop(rss(ifft2c(kspace12), dim=1), (48, 48))
    assert torch.allclose(v.read_target(2), expect[2], atol=1e-5)


def test_singlecoil_round_trip(tmp_path, kspace12):
    k = kspace12[:, 0]
    p = write_fastmri_h5(tmp_path / "file_single.h5", k, acquisition="CORPDFS_FBK")
    v = read_fastmri_h5(p)
    assert not v.multicoil and v.shape == (3, 96, 64) and v.has_esc and not v.has_rss
    assert torch.equal(v.read_slice(0)[0], k[0])
    s = FastMRIDataset(p, crop=48, num_acs=10, acceleration=3)[0]
    assert s.ncoils == 1 and s.kspace.shape == (1, 48, 48)
    assert torch.allclose(s.target * s.scale, center_crop(ifft2c(k[0]), (48, 48)), atol=1e-5)


def test_preprocessing_shapes_acs_normalisation(knee_file):
    ds = FastMRIDataset(knee_file, crop=48, num_acs=10, acceleration=3)
    s = ds[1]
    assert s.kspace.shape == (8, 48, 48) and s.img_shape == (48, 48)  # 12 -> 8 virtual coils
    assert s.mask.shape == (48,) and abs(s.metadata["acceleration"] - 3) < 0.2
    assert bool((s.mask[24 - 5:24 + 5] == 1).all())  # 10 centred ACS lines (DC at W//2)
    assert abs(float(torch.quantile(s.zero_filled_rss().flatten(), 0.95)) - 1) < 1e-5
    obj = s.coil_images.abs().pow(2).sum(0).sqrt() > 0.1
    n = (s.maps_espirit.abs() ** 2).sum(0)[obj]
    # maps are unit-norm wherever ESPIRiT keeps them (eigenvalue > crop) and cover most of the object
    assert float((n[n > 0.5] - 1).abs().max()) < 1e-3
    assert float((n > 0.5).float().mean()) > 0.95
    obj = obj & ((s.maps_espirit.abs() ** 2).sum(0) > 0.5)
    # ground truth = ESPIRiT combination of the fully sampled coil images: S S^H x_c reproduces them
    recon = s.maps_espirit * s.target
    rel = float((recon - s.coil_images)[:, obj].norm() / s.coil_images[:, obj].norm())
    assert rel < 0.05
    # the measured data are the masked k-space of the (compressed, cropped) coil images
    assert torch.allclose(s.kspace, fft2c(s.coil_images) * s.mask, atol=1e-5)
    # mask is deterministic per (file, slice)
    assert torch.equal(FastMRIDataset(knee_file, crop=48, num_acs=10, acceleration=3)[1].mask, s.mask)


def test_crop_without_compression_preserves_image(knee_file, kspace12):
    s = preprocess_multicoil(kspace12[0], num_virtual=None, crop=(48, 48), num_acs=10, acceleration=3,
                             espirit=False)
    expect = center_crop(rss(ifft2c(kspace12[0]), dim=0), (48, 48))
    assert torch.allclose(rss(s.coil_images, dim=0) * s.scale, expect, atol=1e-5)
    # SVD compression to all coils is unitary: the RSS image is unchanged
    s12 = preprocess_multicoil(kspace12[0], num_virtual=12, crop=(48, 48), num_acs=10, acceleration=3,
                               espirit=False)
    assert torch.allclose(rss(s12.coil_images, dim=0) * s12.scale, expect, atol=1e-4)


def test_slice_filters(tmp_path, kspace12):
    p = write_fastmri_h5(tmp_path / "file_brain_x.h5", kspace12)
    ds = FastMRIDataset(p, crop=48, num_acs=10, skip_first=1, skip_last=1, espirit=False)
    assert len(ds) == 1 and ds[0].metadata["slice"] == 1 and ds[0].metadata["anatomy"] == "brain"
    assert [i[1] for i in FastMRIDataset(p, slice_range=(1, 3), espirit=False).index] == [1, 2]
    with pytest.raises(ValueError, match="no slices left"):
        FastMRIDataset(p, skip_first=2, skip_last=1)


def _one_line_error(path):
    with pytest.raises(ValueError) as e:
        read_fastmri_h5(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_malformed_files(tmp_path, knee_file):
    nok = tmp_path / "nokspace.h5"
    with h5py.File(nok, "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((1, 4, 4), np.float32))
    assert "missing dataset 'kspace'" in _one_line_error(nok)

    rank = tmp_path / "rank.h5"
    with h5py.File(rank, "w") as f:
        f.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))
    assert "rank" in _one_line_error(rank)

    nohdr = tmp_path / "nohdr.h5"
    with h5py.File(nohdr, "w") as f:
        f.create_dataset("kspace", data=np.zeros((1, 2, 4, 4), np.complex64))
    assert "ismrmrd_header" in _one_line_error(nohdr)

    real = tmp_path / "real.h5"
    with h5py.File(real, "w") as f:
        f.create_dataset("kspace", data=np.zeros((1, 2, 4, 4), np.float32))
    assert "complex" in _one_line_error(real)

    txt = tmp_path / "notes.h5"
    txt.write_text("this is not HDF5\n")
    assert "not a readable HDF5" in _one_line_error(txt)

    trunc = tmp_path / "trunc.h5"
    data = open(knee_file, "rb").read()
    trunc.write_bytes(data[: len(data) // 2])
    _one_line_error(trunc)

    with pytest.raises(ValueError, match="no such file"):
        read_fastmri_h5(tmp_path / "absent.h5")
    # a folder containing a bad file fails at construction, naming that file
    with pytest.raises(ValueError, match="rank.h5"):
        FastMRIDataset([knee_file, rank])


def test_writer_is_atomic(tmp_path, kspace12):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="shape"):
        write_fastmri_h5(out / "bad.h5", kspace12[0, 0])  # rank 2
    with pytest.raises(ValueError, match="reconstruction"):
        write_fastmri_h5(out / "bad.h5", kspace12, reconstruction=np.zeros((2, 4, 4)))
    with pytest.raises(TypeError, match="complex"):
        write_fastmri_h5(out / "bad.h5", kspace12.real)
    assert not out.exists() or os.listdir(out) == []
    # overwriting an existing file replaces it completely
    p = write_fastmri_h5(out / "ok.h5", kspace12[:1])
    write_fastmri_h5(p, kspace12[:2])
    assert read_fastmri_h5(p).num_slices == 2 and os.listdir(out) == ["ok.h5"]
