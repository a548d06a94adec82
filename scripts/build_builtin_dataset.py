#!/usr/bin/env python
"""Build the built-in brain dataset shipped in ``bayesmri/data/builtin/``.

Sources (see ``bayesmri/data/builtin/README.md`` for provenance and licences):

- nilearn's MNI ICBM152 2009a symmetric templates (``<nilearn>/datasets/data/
  mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``, 1 mm, skull-stripped T1);
- Debian ``mricron-data``: ``/usr/share/mricron/templates/{ch2bet,ch2,inia19-t1-brain}.nii.gz``.

Steps per volume: axial slices (third axis), displayed anterior-up (``flipud(vol[:, :, z].T)``);
slices whose tissue area is below 20 % of the volume's largest axial tissue area are skipped; each slice
is zero-padded to a square field of view, resampled to 128 x 128 with an antialiased bicubic kernel and
normalised to maximum 1; stored as float16.

The T2-like contrast is synthesised from the tissue probability maps: with ``p_gm, p_wm`` in [0, 1]
and ``p_csf = brain_mask * (1 - p_gm - p_wm)``, ``T2 = 1.0 p_csf + 0.55 p_gm + 0.30 p_wm`` (CSF bright,
grey matter intermediate, white matter dark), brain mask = the nonzero support of the T1 template.

Usage: ``python scripts/build_builtin_dataset.py [--out DIR] [--size 128]``. Deterministic; the
output files are written to temporary names and renamed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bayesmri.data.builtin import DATA_DIR, resize_magnitude  # noqa: E402

MRICRON = "/usr/share/mricron/templates"
MNI_NAMES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
MIN_AREA_FRACTION = 0.20


def nilearn_data_dir() -> str:
    try:
        import nilearn
    except ImportError as e:  # pragma: no cover
        raise SystemExit("nilearn is required to build the dataset: pip install 'bayesmri[build-data]'") from e
    return os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")


def load(path: str) -> np.ndarray:
    import nibabel as nib

    if not os.path.exists(path):
        raise SystemExit(f"missing source volume {path} (install Debian mricron-data / nilearn)")
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32))


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def axial(vol: np.ndarray, z: int) -> np.ndarray:
    return np.flipud(vol[:, :, z].T)


def tissue_slices(vol: np.ndarray) -> list[int]:
    thr = 0.05 * float(vol.max())
    area = (vol > thr).sum(axis=(0, 1))
    return [int(z) for z in np.nonzero(area >= MIN_AREA_FRACTION * area.max())[0]]


def to_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    n = max(h, w)
    out = np.zeros((n, n), np.float32)
    out[(n - h) // 2:(n - h) // 2 + h, (n - w) // 2:(n - w) // 2 + w] = img
    return out


def process(vol: np.ndarray, zs: list[int], size: int) -> np.ndarray:
    sl = torch.from_numpy(np.stack([to_square(axial(vol, z)) for z in zs]))
    sl = resize_magnitude(sl, size)
    sl = sl / sl.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return sl.numpy().astype(np.float16)


def split_of_mni(z: int) -> str | None:
    r = z % 20
    if 8 <= r <= 11:
        return "val"
    if r in (6, 7, 12, 13):
        return None  # guard band between train and val
    return "train"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DATA_DIR)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    t0 = time.time()
    nd = nilearn_data_dir()
    paths = {k: os.path.join(nd, v) for k, v in MNI_NAMES.items()}
    t1 = load(paths["t1"])
    gm = load(paths["gm"]) / 255.0
    wm = load(paths["wm"]) / 255.0
    brain = (t1 > 0).astype(np.float32)
    csf = brain * np.clip(1.0 - gm - wm, 0.0, 1.0)
    t2 = brain * (1.0 * csf + 0.55 * gm + 0.30 * wm)

    splits: dict[str, dict[str, list]] = {s: {"images": [], "source": [], "slice_index": [], "contrast": []}
                                          for s in ("train", "val", "test", "ood")}

    def add(split, imgs, source, zs, contrast):
        d = splits[split]
        d["images"].append(imgs)
        d["source"] += [source] * len(zs)
        d["slice_index"] += list(zs)
        d["contrast"] += [contrast] * len(zs)

    zs = tissue_slices(t1)
    for split in ("train", "val"):
        sz = [z for z in zs if split_of_mni(z) == split]
        add(split, process(t1, sz, args.size), MNI_NAMES["t1"], sz, "T1")
        add(split, process(t2, sz, args.size), MNI_NAMES["gm"] + "+" + MNI_NAMES["wm"], sz, "T2-like")

    sources = {MNI_NAMES[k]: sha256(p) for k, p in paths.items()}
    for split, name in (("test", "ch2bet.nii.gz"), ("ood", "ch2.nii.gz"), ("ood", "inia19-t1-brain.nii.gz")):
        p = os.path.join(MRICRON, name)
        vol = load(p)
        sz = tissue_slices(vol)
        add(split, process(vol, sz, args.size), name, sz, "T1")
        sources[name] = sha256(p)

    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for split, d in splits.items():
        arrays = {
            "images": np.concatenate(d["images"]),
            "source": np.array(d["source"], dtype=np.str_),
            "slice_index": np.array(d["slice_index"], dtype=np.int32),
            "contrast": np.array(d["contrast"], dtype=np.str_),
        }
        final = os.path.join(args.out, f"{split}.npz")
        fd, tmp = tempfile.mkstemp(dir=args.out, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        summary[split] = {"slices": int(arrays["images"].shape[0]),
                          "bytes": os.path.getsize(final)}
        print(f"{split:6s} {arrays['images'].shape[0]:4d} slices  {os.path.getsize(final) / 1e6:6.2f} MB  "
              f"sources: {sorted(set(d['source']))}")
    manifest = {"size": args.size, "normalisation": "max = 1 per slice", "dtype": "float16",
                "splits": summary, "source_sha256": sources,
                "val_rule": "MNI z % 20 in 8..11 -> val; in {6,7,12,13} -> unused guard; else train"}
    fd, tmp = tempfile.mkstemp(dir=args.out, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(args.out, "manifest.json"))
    print(f"built in {time.time() - t0:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
