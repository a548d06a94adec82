"""Built-in dataset: loader contract, split separation, provenance, reproducible build."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bayesmri.data import builtin
from bayesmri.data.builtin import list_splits, load_slices, resize_magnitude, slice_info

MNI_PREFIX = "mni_icbm152_"


def test_splits_and_unknown_split():
    assert list_splits() == ("train", "val", "test", "ood")
    with pytest.raises(ValueError, match="unknown split 'tset'.*train, val, test, ood"):
        load_slices("tset")
    with pytest.raises(ValueError, match="no contrast 'PD'"):
        load_slices("train", contrast="PD")
    with pytest.raises(ValueError, match="size"):
        load_slices("test", size=0)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_loader_shapes_dtype_range(size):
    x = load_slices("test", size=size, indices=[0, 10, -1])
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0
    assert torch.allclose(x.flatten(1).amax(1), torch.ones(3), atol=1e-3)


def test_contrast_filter_and_counts():
    t1 = load_slices("train", contrast="T1")
    t2 = load_slices("train", contrast="T2-like")
    assert len(t1) == len(t2) == builtin.num_slices("train") // 2 > 50
    # The T2-like contrast is not a copy of T1: CSF (bright in T2) is dark in T1.
    assert float((t1 - t2).abs().mean()) > 0.05


def test_resize_is_antialiased():
    # A pixel-scale checkerboard carries only the Nyquist frequency; a proper low-pass before
    # decimation removes it (a plain subsampling would return all ones or all zeros).
    cb = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float()[None]
    half = resize_magnitude(cb, 32)
    assert half.shape == (1, 32, 32)
    inner = half[0, 4:-4, 4:-4]
    assert abs(float(inner.mean()) - 0.5) < 0.02 and float(inner.std()) < 0.02
    naive = cb[0, ::2, ::2]
    assert float(naive.std()) == 0.0 and float(naive.mean()) in (0.0, 1.0)


def test_split_provenance():
    test_src = {i.source for i in slice_info("test")}
    assert test_src == {"ch2bet.nii.gz"}
    assert {i.source for i in slice_info("ood")} == {"ch2.nii.gz", "inia19-t1-brain.nii.gz"}
    for split in ("train", "val"):
        assert all(i.source.startswith(MNI_PREFIX) for i in slice_info(split))
    for split in ("test", "ood"):
        assert not any(MNI_PREFIX in i.source for i in slice_info(split))
    tr = {i.slice_index for i in slice_info("train")}
    va = {i.slice_index for i in slice_info("val")}
    assert tr.isdisjoint(va)
    assert min(abs(a - b) for a in va for b in tr) >= 3  # guard band


def _min_rel_dist(a, b):
    a, b = a.flatten(1).double(), b.flatten(1).double()
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return (d2.clamp_min(0).sqrt() / a.norm(dim=1)[:, None]).min(dim=1).values


def test_no_test_slice_near_equals_a_train_slice():
    train = load_slices("train", size=64)
    test = load_slices("test", size=64)
    # Sanity of the measure: each train slice is at distance 0 from itself ...
    assert float(_min_rel_dist(train[:5], train).max()) < 1e-6
    # ... while every Colin27 slice is far from every MNI slice.
    assert float(_min_rel_dist(test, train).min()) > 0.1
    # Held-out val slices are not copies of train slices either (>= 3 mm apart).
    assert float(_min_rel_dist(load_slices("val", size=64), train).min()) > 0.02


@pytest.mark.slow
def test_build_is_reproducible(tmp_path):
    try:
        import nilearn  # noqa: F401
    except ImportError:
        pytest.skip("nilearn not installed")
    if not os.path.exists("/usr/share/mricron/templates/ch2bet.nii.gz"):
        pytest.skip("Debian mricron-data not installed")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "scripts", "build_builtin_dataset.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, script, "--out", str(tmp_path)], check=True, capture_output=True, env=env)
    for split in list_splits():
        with np.load(tmp_path / f"{split}.npz") as new, np.load(os.path.join(builtin.DATA_DIR, f"{split}.npz")) as old:
            assert np.array_equal(new["images"], old["images"])
            assert np.array_equal(new["source"], old["source"])
            assert np.array_equal(new["slice_index"], old["slice_index"])
    shipped = json.load(open(os.path.join(builtin.DATA_DIR, "manifest.json")))
    assert json.load(open(tmp_path / "manifest.json"))["source_sha256"] == shipped["source_sha256"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
