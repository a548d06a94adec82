"""Every file writer of the library goes through the one atomic-write helper (``bayesmri.io.atomic_path``).

A failure after the data has been written but before the rename (here: ``fsync`` fails, as on a full
disk or a pulled network share) must leave neither the target nor a temporary file; a writer that
bypassed the helper would leave the target behind.
"""
import os

import numpy as np
import pytest
import torch

from bayesmri import io


def _writers():
    from bayesmri.bart import writecfl
    from bayesmri.data.fastmri import write_fastmri_h5
    from bayesmri.flows.cinn import MultiScaleCINN, save_cinn
    from bayesmri.priors.loading import save_model
    from bayesmri.report import write_report
    from bayesmri.train import atomic_torch_save

    img = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    k = torch.ones(1, 2, 8, 8, dtype=torch.complex64)
    cinn = MultiScaleCINN(8, 1, n_levels=1, couplings=1, hidden=4, cond_channels=1, fc_couplings=1)
    return {
        "save_json": (lambda d: io.save_json(d / "m.json", {"a": 1}), ["m.json"]),
        "atomic_write": (lambda d: io.atomic_write(d / "t.txt", "text"), ["t.txt"]),
        "save_npz": (lambda d: io.save_npz(d / "a.npz", x=img), ["a.npz"]),
        "save_h5": (lambda d: io.save_h5(d / "a.h5", {"x": img}), ["a.h5"]),
        "save_png": (lambda d: io.save_png(d / "a.png", img[0]), ["a.png"]),
        "save_nifti": (lambda d: io.save_nifti(d / "a.nii.gz", img), ["a.nii.gz"]),
        "writecfl": (lambda d: writecfl(str(d / "k"), k.numpy()[0]), ["k.cfl"]),
        "write_fastmri_h5": (lambda d: write_fastmri_h5(d / "f.h5", k[0]), ["f.h5"]),
        "save_model": (lambda d: save_model({"w": torch.ones(2)}, d / "w", model_type="t", config={}), ["w.safetensors"]),
        "save_cinn": (lambda d: save_cinn(cinn, d / "c"), ["c.safetensors"]),
        "atomic_torch_save": (lambda d: atomic_torch_save({"step": 1}, d / "ckpt.pt"), ["ckpt.pt"]),
        "write_report": (lambda d: write_report(d / "r.html", "t"), ["r.html"]),
    }


@pytest.mark.parametrize("name", list(_writers()))
def test_a_failed_write_leaves_no_file_and_no_temporary(name, tmp_path, monkeypatch):
    write, files = _writers()[name]
    write(tmp_path / "ok")  # the writer works
    assert all((tmp_path / "ok" / f).exists() for f in files)

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    out = tmp_path / "failed"
    out.mkdir()
    with pytest.raises(OSError, match="No space left"):
        write(out)
    assert list(out.iterdir()) == [], f"{name} left {sorted(p.name for p in out.iterdir())}"


def test_atomic_write_replaces_only_with_a_complete_file(tmp_path, monkeypatch):
    p = io.atomic_write(tmp_path / "a.txt", "old")
    assert p.read_text() == "old"
    io.atomic_write(p, b"new")
    assert p.read_bytes() == b"new"
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        io.atomic_write(p, "newer")
    assert p.read_text() == "new" and [q.name for q in tmp_path.iterdir()] == ["a.txt"]
