"""Round trips and failure behaviour of bayesmri.io (PNG, NIfTI, npz, h5, JSON; atomic writes)."""
import numpy as np
import pytest
import torch

from bayesmri import io


def _stack(seed=0, shape=(3, 16, 12), complex_=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    return torch.complex(x, torch.randn(*shape, generator=g)) if complex_ else x


def test_nifti_roundtrip_complex_and_axes(tmp_path):
    x = _stack()
    p = io.save_nifti(tmp_path / "x.nii.gz", x, voxel_size=(0.5, 0.7, 3.0))
    back = io.load_nifti(p)
    assert back.shape == (3, 16, 12)  # (S, H, W) survives the (H, W, S) file layout
    assert back.dtype == np.complex64
    np.testing.assert_allclose(back, x.numpy(), rtol=0, atol=0)
    import nibabel as nib

    img = nib.load(str(p))
    assert img.shape == (16, 12, 3)
    np.testing.assert_allclose(img.header.get_zooms(), (0.5, 0.7, 3.0))


def test_nifti_magnitude_and_single_slice(tmp_path):
    x = _stack(shape=(8, 8))
    back = io.load_nifti(io.save_nifti(tmp_path / "m.nii", x, magnitude=True))
    assert back.shape == (1, 8, 8) and back.dtype == np.float32
    np.testing.assert_allclose(back[0], x.abs().numpy(), rtol=1e-6)


def test_png_writes_image_with_requested_pixels(tmp_path):
    import matplotlib.image as mpimg

    img = np.zeros((32, 32))
    img[:, 16:] = 1.0  # left half black, right half white
    p = io.save_png(tmp_path / "a.png", torch.from_numpy(img).to(torch.complex64))
    assert io.png_bytes(p)[:4] == b"\x89PNG"
    rgba = mpimg.imread(p)
    gray = rgba[..., :3].mean(-1)
    h, w = gray.shape
    # the image is drawn: both the black and the white half are present in the middle row
    row = gray[h // 2]
    assert row.min() < 0.1 and row.max() > 0.9
    assert w > 100 and h > 100


def test_grid_and_bad_images(tmp_path):
    x = _stack(shape=(3, 8, 8))
    io.save_image_grid(tmp_path / "g.png", list(x), titles=["a", "b", "c"], vmin=0, vmax=3)
    assert (tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ValueError, match="titles"):
        io.save_image_grid(tmp_path / "bad.png", list(x), titles=["a"])
    with pytest.raises(ValueError, match="2-D"):
        io.save_png(tmp_path / "bad.png", np.zeros((2, 3, 4)))
    nan = np.zeros((4, 4))
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        io.save_png(tmp_path / "bad.png", nan)
    assert not (tmp_path / "bad.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # no temporary leftovers


def test_npz_roundtrip_skips_none(tmp_path):
    x = _stack()
    p = io.save_npz(tmp_path / "r.npz", mean=x, std=x.abs(), samples=None, nfe=np.int64(7))
    d = io.load_npz(p)
    assert set(d) == {"mean", "std", "nfe"}
    np.testing.assert_array_equal(d["mean"], x.numpy())
    assert int(d["nfe"]) == 7
    assert not (tmp_path / "r.npz.npz").exists()
    with pytest.raises(ValueError, match=".npz"):
        io.save_npz(tmp_path / "r.bin", a=x)


def test_h5_roundtrip_with_attrs(tmp_path):
    x = _stack()
    p = io.save_h5(tmp_path / "r.h5", {"mean": x, "mask": torch.ones(12)}, {"method": "tv", "lam": 1e-3})
    arrays, attrs = io.load_h5(p)
    np.testing.assert_array_equal(arrays["mean"], x.numpy())
    assert arrays["mask"].shape == (12,)
    assert attrs["method"] == "tv" and attrs["lam"] == pytest.approx(1e-3)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []
    # an existing file is replaced only by a complete one
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"


def test_json_refuses_nan(tmp_path):
    io.save_json(tmp_path / "m.json", {"a": np.float32(1.5), "b": np.arange(2)})
    assert io.load_json(tmp_path / "m.json") == {"a": 1.5, "b": [0, 1]}
    with pytest.raises(ValueError):
        io.save_json(tmp_path / "n.json", {"a": float("nan")})
    assert not (tmp_path / "n.json").exists()


def test_atomic_dir_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with io.atomic_dir(out) as stage:
            io.save_json(stage / "a.json", {"x": 1})
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep.txt").write_text("k")
    (out / "a.json").write_text("old")
    with io.atomic_dir(out) as stage:
        io.save_json(stage / "a.json", {"x": 2})
        (stage / "figs").mkdir()
        io.save_png(stage / "figs" / "p.png", np.eye(4))
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "figs", "keep.txt"]
    assert io.load_json(out / "a.json") == {"x": 2}
    assert list(tmp_path.iterdir()) == [out]  # staging folder gone


def test_written_files_get_the_umask_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        p = io.save_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644
