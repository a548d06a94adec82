"""fastMRI-style evaluation of reconstructed volumes (``bayesmri evaluate``; ``docs/datasets.md``).

The definitions are those of fastMRI's ``fastmri/evaluate.py``, per *volume* ``(S, H, W)``:

- both volumes are centre-cropped to ``W x W`` (``W`` the reference's width; a reference lower than it
  keeps its height), as fastMRI crops the target and the reconstruction before scoring;
- ``MSE = mean((gt - pred)^2)``, ``NMSE = ||gt - pred||^2 / ||gt||^2`` over the whole volume;
- ``PSNR = 10 log10(gt.max()^2 / MSE)`` (skimage's ``peak_signal_noise_ratio`` with
  ``data_range = gt.max()``);
- ``SSIM``: skimage's ``structural_similarity`` of each slice (7 x 7 uniform window, K1 0.01, K2 0.03,
  sample covariance) with ``data_range = gt.max()`` of the *volume*, averaged over slices
  (:func:`bayesmri.metrics.ssim` on the volume as one item).

Dataset statistics are the mean and the sample standard deviation (``ddof = 1``, as fastMRI's ``runstats``)
over volumes; fastMRI prints ``mean +/- 2 std``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["METRICS", "volume_metrics", "fastmri_crop", "reference_key_of", "read_reference",
           "evaluate_folder", "Evaluation", "summarise", "format_table"]

#: Metric names in the order of the table (fastMRI's METRIC_FUNCS).
METRICS = ("psnr", "ssim", "nmse", "mse")

#: fastMRI's target datasets, in the order they are looked for (multi-coil, then single-coil).
REFERENCE_KEYS = ("reconstruction_rss", "reconstruction_esc")


def fastmri_crop(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop ``gt`` and ``pred`` ``(S, H, W)`` to ``(min(H_gt, W_gt), W_gt)`` as fastMRI's evaluate does.

    ``ValueError`` if ``pred`` is smaller than that crop."""
    h, w = min(gt.shape[-2], gt.shape[-1]), gt.shape[-1]

    def crop(x, what):
        H, W = x.shape[-2:]
        if h > H or w > W:
            raise ValueError(f"{what} of {H} x {W} is smaller than the {h} x {w} crop of the reference")
        t, l = (H - h) // 2, (W - w) // 2
        return x[..., t:t + h, l:l + w]

    return crop(gt, "reference"), crop(pred, "reconstruction")


def volume_metrics(pred, gt) -> dict[str, float]:
    """PSNR, SSIM, NMSE and MSE of the magnitude volume ``pred`` against ``gt``, both ``(S, H, W)``.

    fastMRI's per-volume definitions (module docstring), computed in float64 after :func:`fastmri_crop`.
    A value that is not finite (PSNR of a perfect reconstruction) is returned as ``inf``/``nan``.
    """
    import torch

    from .metrics import ssim

    gt = np.abs(np.asarray(gt)).astype(np.float64)
    pred = np.abs(np.asarray(pred)).astype(np.float64)
    if gt.ndim != 3 or pred.ndim != 3:
        raise ValueError(f"expected volumes (S, H, W), got reference {gt.shape} and reconstruction {pred.shape}")
    if gt.shape[0] != pred.shape[0]:
        raise ValueError(f"reconstruction has {pred.shape[0]} slice(s), the reference {gt.shape[0]}")
    gt, pred = fastmri_crop(gt, pred)
    if not (np.isfinite(gt).all() and np.isfinite(pred).all()):
        raise ValueError("reference or reconstruction contains NaN or Inf")
    err = gt - pred
    mse = float(np.mean(err**2))
    ref2 = float(np.sum(gt**2))
    peak = float(gt.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        nmse = float(np.sum(err**2) / ref2) if ref2 > 0 else math.nan
        psnr = float(10 * np.log10(peak**2 / mse)) if peak > 0 else math.nan
    s = float(ssim(torch.from_numpy(pred[None]), torch.from_numpy(gt[None]), data_range=peak)[0]) if peak > 0 else math.nan
    return {"psnr": psnr, "ssim": s, "nmse": nmse, "mse": mse}


def reference_key_of(f, key: str | None = None, fname="") -> str:
    """The dataset of an open fastMRI file ``f`` that holds the reference: ``key`` or the first of
    :data:`REFERENCE_KEYS` present; ``ValueError`` naming the file if there is none."""
    if key is not None:
        if key not in f:
            raise ValueError(f"{fname}: no dataset {key!r} (has {', '.join(sorted(f.keys())) or 'nothing'})")
        return key
    for k in REFERENCE_KEYS:
        if k in f:
            return k
    raise ValueError(f"{fname}: no reference dataset ({' or '.join(REFERENCE_KEYS)}); name one with --reference-key")


def read_reference(path, key: str | None = None, slices=None) -> tuple[np.ndarray, str]:
    """``(volume (S, H, W) float32, key)`` of the reference of a fastMRI-layout file; ``slices`` picks slices."""
    import h5py

    with h5py.File(path, "r") as f:
        k = reference_key_of(f, key, path)
        ds = f[k]
        if ds.ndim != 3:
            raise ValueError(f"{path}: dataset {k!r} has shape {ds.shape}, expected (slices, H, W)")
        if slices is None:
            return np.asarray(ds[()], dtype=np.float32), k
        idx = [int(i) for i in slices]
        if any(not 0 <= i < ds.shape[0] for i in idx):
            raise ValueError(f"{path}: slices {idx} outside the {ds.shape[0]} slice(s) of {k!r}")
        return np.stack([np.asarray(ds[i], dtype=np.float32) for i in idx]), k


def _finite(v):
    return v if isinstance(v, float) and math.isfinite(v) else None


@dataclass
class Evaluation:
    """Per-volume metrics (``volumes``: dicts with ``file``, ``n_slices`` and :data:`METRICS`; ``None`` where
    not finite) and their ``mean`` / ``std`` over volumes; ``missing``: references without a reconstruction."""

    volumes: list = field(default_factory=list)
    mean: dict = field(default_factory=dict)
    std: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    reference_key: str | None = None

    def to_json(self) -> dict:
        return {"definitions": "fastMRI evaluate.py: per volume; SSIM per slice with the volume's max, averaged",
                "reference_key": self.reference_key, "n_volumes": len(self.volumes), "mean": self.mean,
                "std": self.std, "volumes": self.volumes, "missing_reconstructions": self.missing}


def summarise(rows) -> tuple[dict, dict]:
    """``(mean, std)`` of :data:`METRICS` over ``rows`` (``std`` with ``ddof = 1``; ``None`` below 2 values)."""
    mean, std = {}, {}
    for m in METRICS:
        v = np.array([r[m] for r in rows if r.get(m) is not None], dtype=np.float64)
        mean[m] = _finite(float(v.mean())) if v.size else None
        std[m] = _finite(float(v.std(ddof=1))) if v.size > 1 else None
    return mean, std


def evaluate_folder(pred_dir, ref_dir, *, reference_key: str | None = None, files=None) -> Evaluation:
    """Score every ``*.h5`` of ``pred_dir`` that holds ``reconstruction`` against the same name in ``ref_dir``.

    A reconstruction with a ``slices`` dataset (``bayesmri recon`` with ``--slices``) is compared with those
    slices of the reference. ``files``: names to score (default all). ``ValueError`` (one line naming
    the file) for a reconstruction without a reference file or of another shape.
    """
    import h5py

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for d, what in ((pred_dir, "reconstruction folder"), (ref_dir, "reference folder")):
        if not d.is_dir():
            raise FileNotFoundError(f"{what} {d} does not exist or is not a folder")
    names = sorted(files) if files is not None else sorted(
        p.name for p in pred_dir.glob("*.h5") if p.is_file() and not p.name.startswith("."))
    res = Evaluation()
    keys = set()
    for name in names:
        p = pred_dir / name
        with h5py.File(p, "r") as f:
            if "reconstruction" not in f:
                continue
            pred = np.asarray(f["reconstruction"][()], dtype=np.float32)
            slices = np.asarray(f["slices"][()]).tolist() if "slices" in f else None
        ref_path = ref_dir / name
        if not ref_path.is_file():
            raise ValueError(f"no reference for {name}: {ref_path} does not exist")
        gt, key = read_reference(ref_path, reference_key, slices)
        keys.add(key)
        try:
            vals = volume_metrics(pred, gt)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        res.volumes.append({"file": name, "n_slices": int(pred.shape[0]), **{k: _finite(v) for k, v in vals.items()}})
    if not res.volumes:
        raise ValueError(f"no reconstruction (*.h5 with a 'reconstruction' dataset) in {pred_dir}")
    done = {v["file"] for v in res.volumes}
    res.missing = sorted(p.name for p in ref_dir.glob("*.h5") if p.is_file() and p.name not in done) if files is None else []
    res.reference_key = ",".join(sorted(keys))
    res.mean, res.std = summarise(res.volumes)
    return res


def _fmt(m: str, v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if m == "psnr" else f"{v:.4f}" if m == "ssim" else f"{v:.4g}"


def format_table(rows, mean: dict | None = None, std: dict | None = None) -> str:
    """Plain-text table: one row per volume (``file``, ``n_slices``, :data:`METRICS`), then mean and std."""
    head = ["file", "slices", "PSNR dB", "SSIM", "NMSE", "MSE"]
    body = [[r["file"], str(r.get("n_slices", ""))] + [_fmt(m, r.get(m)) for m in METRICS] for r in rows]
    if mean is not None:
        body.append(["mean", str(sum(int(r.get("n_slices") or 0) for r in rows))] + [_fmt(m, mean.get(m)) for m in METRICS])
    if std is not None:
        body.append(["std", ""] + [_fmt(m, std.get(m)) for m in METRICS])
    width = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, width)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in width])] + [line(b) for b in body])
