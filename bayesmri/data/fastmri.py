"""fastMRI ``.h5`` files: reader, the papers' multi-coil preprocessing, and an exact-layout writer.

File layout (fastMRI, Zbontar et al. 2018):

- ``kspace``: ``(slices, coils, H, W)`` (multi-coil) or ``(slices, H, W)`` (single-coil) complex64,
  centred (DC at ``(H//2, W//2)``), ``H`` the readout (frequency-encoding, often 2x oversampled) and
  ``W`` the phase-encoding axis, which 1-D masks undersample (our last-axis convention);
- ``reconstruction_rss`` (multi-coil) / ``reconstruction_esc`` (single-coil): ``(slices, h, w)`` float32
  magnitude targets at the recon matrix size (absent in test files);
- attributes ``max`` (of the reconstruction), ``norm``, ``acquisition`` (e.g. ``CORPD_FBK``, ``AXT2``),
  ``patient_id``, and for masked files ``num_low_frequency``;
- ``ismrmrd_header``: ISMRMRD XML with the encoded and recon matrix sizes and fields of view.

Preprocessing (Wen et al. 2023, sec. 3.2 and appendix A; :func:`preprocess_multicoil`): SVD coil
compression to 8 virtual coils -> centre crop to ``320 x 320`` (knee) / ``384 x 384`` (brain) in image
space -> re-synthesised k-space ``F`` of the cropped coil images -> GRO mask ``R = 4`` with 13 (knee) /
32 (brain) ACS lines -> ESPIRiT maps from the ACS -> normalisation by the 95th percentile of the
zero-filled RSS magnitude. Every error about a file is a one-line ``ValueError`` naming the file.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import torch

from ..io import atomic_path
from ..physics.coils import rss, svd_coil_compression
from ..physics.fft import fft2c, ifft2c
from ..physics.masks import apply_mask
from ..physics.intensity import intensity_scale
from .sample import MRISample

__all__ = [
    "ANATOMY_DEFAULTS",
    "FastMRIVolume",
    "read_fastmri_h5",
    "parse_ismrmrd_header",
    "ImageGeometry",
    "image_geometry",
    "make_ismrmrd_header",
    "write_fastmri_h5",
    "center_crop",
    "estimate_noise_sigma",
    "preprocess_multicoil",
    "preprocess_singlecoil",
    "FastMRIDataset",
]

#: Wen et al. sec. 3.2 / appendix A: crop size, ACS lines, GRO acceleration per anatomy.
ANATOMY_DEFAULTS = {
    "knee": {"crop": (320, 320), "num_acs": 13, "acceleration": 4.0},
    "brain": {"crop": (384, 384), "num_acs": 32, "acceleration": 4.0},
}

_NS = "{http://www.ismrm.org/ISMRMRD}"


# ----------------------------------------------------------------------------------------------------
# header
# ----------------------------------------------------------------------------------------------------
def make_ismrmrd_header(encoded: tuple[int, int, int], recon: tuple[int, int, int],
                        encoded_fov_mm: tuple[float, float, float] | None = None,
                        recon_fov_mm: tuple[float, float, float] | None = None,
                        acquisition: str | None = None) -> str:
    """A minimal ISMRMRD XML header in fastMRI's layout (``encoding/encodedSpace``, ``reconSpace``,
    ``encodingLimits/kspace_encoding_step_1``). ``encoded`` and ``recon`` are matrix sizes ``(x, y, z)``
    (fastMRI: x = readout = H, y = phase encoding = W)."""
    efov = encoded_fov_mm or tuple(float(v) for v in encoded)
    rfov = recon_fov_mm or tuple(float(v) for v in recon)
    root = ET.Element("ismrmrdHeader", xmlns=_NS[1:-1])
    if acquisition:
        mi = ET.SubElement(root, "measurementInformation")
        ET.SubElement(mi, "protocolName").text = str(acquisition)
    enc = ET.SubElement(root, "encoding")
    for tag, mat, fov in (("encodedSpace", encoded, efov), ("reconSpace", recon, rfov)):
        sp = ET.SubElement(enc, tag)
        ms = ET.SubElement(sp, "matrixSize")
        for ax, v in zip("xyz", mat):
            ET.SubElement(ms, ax).text = str(int(v))
        fv = ET.SubElement(sp, "fieldOfView_mm")
        for ax, v in zip("xyz", fov):
            ET.SubElement(fv, ax).text = f"{float(v):g}"
    lim = ET.SubElement(enc, "encodingLimits")
    e1 = ET.SubElement(lim, "kspace_encoding_step_1")
    ny = int(encoded[1])
    ET.SubElement(e1, "minimum").text = "0"
    ET.SubElement(e1, "maximum").text = str(ny - 1)
    ET.SubElement(e1, "center").text = str(ny // 2)
    ET.SubElement(enc, "trajectory").text = "cartesian"
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def parse_ismrmrd_header(xml, fname: str = "<header>") -> dict:
    """Parse the fastMRI ISMRMRD header.

    Returns
    -------
    dict with ``encoded_matrix (x, y, z)``, ``recon_matrix (x, y, z)``, ``encoded_fov_mm``,
    ``recon_fov_mm`` (tuples of float) and ``enc_limits_center``, ``enc_limits_max`` (int or None); the
    raw-data fields of the first encoding (None where absent): ``trajectory``, ``calibration_mode``,
    ``acceleration_pe1``, ``acceleration_pe2``, ``receiver_noise_bandwidth``
    (``relativeReceiverNoiseBandwidth``), ``receiver_channels``, and ``n_encodings``.

    Raises
    ------
    ValueError
        Unparsable XML or missing matrix sizes, naming ``fname``.
    """
    if isinstance(xml, (bytes, np.bytes_)):
        xml = bytes(xml).decode("utf-8", errors="replace")
    try:
        root = ET.fromstring(str(xml))
    except ET.ParseError as e:
        raise ValueError(f"{fname}: ismrmrd_header is not valid XML ({e})") from None
    ns = _NS if root.tag.startswith(_NS) else ""

    def vec(path, conv):
        node = root.find("./" + "/".join(ns + part for part in path.split("/")))
        if node is None:
            return None
        vals = []
        for ax in "xyz":
            child = node.find(ns + ax)
            try:
                vals.append(conv(child.text) if child is not None and child.text else None)
            except ValueError:
                raise ValueError(f"{fname}: ismrmrd_header {path}/{ax} is not a number: {child.text[:40]!r}") from None
        return tuple(vals)

    out = {
        "encoded_matrix": vec("encoding/encodedSpace/matrixSize", int),
        "recon_matrix": vec("encoding/reconSpace/matrixSize", int),
        "encoded_fov_mm": vec("encoding/encodedSpace/fieldOfView_mm", float),
        "recon_fov_mm": vec("encoding/reconSpace/fieldOfView_mm", float),
    }
    for key in ("encoded_matrix", "recon_matrix"):
        if out[key] is None or out[key][0] is None or out[key][1] is None:
            raise ValueError(f"{fname}: ismrmrd_header has no {key.replace('_', ' ')} size")
    for key, tag in (("enc_limits_center", "center"), ("enc_limits_max", "maximum")):
        node = root.find(f"./{ns}encoding/{ns}encodingLimits/{ns}kspace_encoding_step_1/{ns}{tag}")
        try:
            out[key] = int(node.text) if node is not None and node.text else None
        except ValueError:
            raise ValueError(f"{fname}: ismrmrd_header kspace_encoding_step_1/{tag} is not an integer: "
                             f"{node.text[:40]!r}") from None

    def text(path):
        node = root.find("./" + "/".join(ns + part for part in path.split("/")))
        return node.text.strip() if node is not None and node.text and node.text.strip() else None

    def number(path, conv):
        t = text(path)
        try:
            return conv(t) if t is not None else None
        except ValueError:
            raise ValueError(f"{fname}: ismrmrd_header {path} is not a number: {t[:40]!r}") from None

    # Raw-data fields (ISMRMRD files from scanner converters; absent from fastMRI headers)
    out["n_encodings"] = len(root.findall(f"./{ns}encoding"))
    out["trajectory"] = text("encoding/trajectory")
    out["calibration_mode"] = text("encoding/parallelImaging/calibrationMode")
    out["acceleration_pe1"] = number("encoding/parallelImaging/accelerationFactor/kspace_encoding_step_1", int)
    out["acceleration_pe2"] = number("encoding/parallelImaging/accelerationFactor/kspace_encoding_step_2", int)
    out["receiver_noise_bandwidth"] = number("acquisitionSystemInformation/relativeReceiverNoiseBandwidth", float)
    out["receiver_channels"] = number("acquisitionSystemInformation/receiverChannels", int)
    return out


@dataclass(frozen=True)
class ImageGeometry:
    """Grid of a reconstruction as fastMRI delivers it (:func:`image_geometry`).

    Attributes
    ----------
    matrix : ``(h, w)``: image size after the crop to the recon matrix (readout oversampling removed).
    voxel_mm : ``(x, y, z)``: voxel size in mm along the readout (H), phase-encoding (W) and slice axes.
    source : where ``voxel_mm`` came from: ``"reconSpace"``, ``"encodedSpace"`` or ``"default"`` (1 mm).
    orientation : per slice ``position`` (mm) and ``read_dir``/``phase_dir``/``slice_dir`` cosines in the
        ISMRMRD patient coordinate system (ISMRMRD raw data), or None.
    """

    matrix: tuple
    voxel_mm: tuple
    source: str
    orientation: list | None = None

    @property
    def affine(self) -> np.ndarray:
        """``4 x 4`` NIfTI affine of an ``(h, w, slices)`` volume: the voxel sizes on the diagonal."""
        return np.diag([float(v) for v in self.voxel_mm] + [1.0])


def image_geometry(header: dict, kspace_shape) -> ImageGeometry:
    """Output grid and voxel size of a reconstruction of k-space ``(..., H, W)`` with ISMRMRD ``header``.

    fastMRI reconstructs the full k-space matrix and crops the image to the recon matrix (its
    ``reconstruction_rss`` is ``320 x 320`` for ``640 x 368`` knee k-space: the 2x readout oversampling
    and the phase padding go). The crop cannot grow an image, so each axis keeps ``min(recon, k-space)``.
    The voxel size is ``FOV / matrix`` of the recon space (the FOV the cropped image spans); where the
    header has no usable recon FOV, of the encoded space; else 1 mm.

    Parameters
    ----------
    header : dict from :func:`parse_ismrmrd_header`.
    kspace_shape : shape of the k-space, last two axes ``(H, W)`` (H = readout = ISMRMRD x).

    Returns
    -------
    ImageGeometry
    """
    H, W = (int(v) for v in tuple(kspace_shape)[-2:])
    rm = header.get("recon_matrix") or (None, None, None)
    h = min(int(rm[0]), H) if rm[0] and int(rm[0]) > 0 else H
    w = min(int(rm[1]), W) if rm[1] and int(rm[1]) > 0 else W

    def spacing(space: str):
        fov, mat = header.get(f"{space}_fov_mm"), header.get(f"{space}_matrix")
        if not fov or not mat:
            return None
        out = []
        for f, n in zip(fov, mat):
            if f is None or n is None or not np.isfinite(f) or f <= 0 or n <= 0:
                return None
            out.append(float(f) / int(n))
        return tuple(out)

    for space, source in (("recon", "reconSpace"), ("encoded", "encodedSpace")):
        vox = spacing(space)
        if vox is not None:
            return ImageGeometry((h, w), vox, source)
    return ImageGeometry((h, w), (1.0, 1.0, 1.0), "default")


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------
@dataclass
class FastMRIVolume:
    """Header-level description of a fastMRI file (k-space is read per slice on demand)."""

    fname: str
    shape: tuple  # kspace shape
    multicoil: bool
    header: dict
    attrs: dict = field(default_factory=dict)
    has_rss: bool = False
    has_esc: bool = False

    @property
    def num_slices(self) -> int:
        return int(self.shape[0])

    def read_slice(self, i: int) -> torch.Tensor:
        """k-space of slice ``i``: ``(C, H, W)`` (multi-coil) or ``(1, H, W)`` (single-coil), complex64."""
        return _read_kspace_slice(self.fname, i, self.multicoil)

    def read_target(self, i: int) -> torch.Tensor | None:
        """``reconstruction_rss`` / ``reconstruction_esc`` of slice ``i`` (float32 ``(h, w)``) or None."""
        key = "reconstruction_rss" if self.has_rss else ("reconstruction_esc" if self.has_esc else None)
        if key is None:
            return None
        h5py = _h5py()
        try:
            with h5py.File(self.fname, "r") as f:
                return torch.from_numpy(np.asarray(f[key][i], dtype=np.float32))
        except (OSError, KeyError) as e:
            raise ValueError(f"{self.fname}: cannot read {key}[{i}] ({_short(e)})") from None


def _h5py():
    import h5py

    return h5py


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def open_h5(fname: str):
    """``h5py.File(fname, "r")``, or a one-line ``ValueError`` naming a missing or unreadable file."""
    if not os.path.isfile(fname):
        raise ValueError(f"{fname}: no such file")
    try:
        return _h5py().File(fname, "r")
    except OSError as e:
        raise ValueError(f"{fname}: not a readable HDF5 file (truncated or wrong format: {_short(e)})") from None


def read_fastmri_h5(fname) -> FastMRIVolume:
    """Open and validate a fastMRI file; returns a :class:`FastMRIVolume` (no k-space loaded).

    Raises
    ------
    ValueError
        One line naming the file: missing file, not HDF5 / truncated, missing ``kspace``, wrong rank or
        dtype, missing or malformed ``ismrmrd_header``.
    """
    fname = os.fspath(fname)
    h5py = _h5py()
    f = open_h5(fname)
    try:
        with f:
            if "kspace" not in f:
                raise ValueError(f"{fname}: missing dataset 'kspace' (found: {', '.join(sorted(f.keys())) or 'none'})")
            ds = f["kspace"]
            if not isinstance(ds, h5py.Dataset):
                raise ValueError(f"{fname}: 'kspace' is not a dataset")
            shape = tuple(int(s) for s in ds.shape)
            if len(shape) not in (3, 4):
                raise ValueError(f"{fname}: kspace must have rank 3 (slices, H, W) or 4 (slices, coils, H, W), "
                                 f"got shape {shape}")
            if ds.dtype.kind != "c":
                raise ValueError(f"{fname}: kspace must be complex, got dtype {ds.dtype}")
            if min(shape) < 1:
                raise ValueError(f"{fname}: kspace is empty, shape {shape}")
            if "ismrmrd_header" not in f:
                raise ValueError(f"{fname}: missing dataset 'ismrmrd_header'")
            header = parse_ismrmrd_header(f["ismrmrd_header"][()], fname)
            attrs = {}
            for k, v in f.attrs.items():
                attrs[k] = v.decode() if isinstance(v, bytes) else (v.item() if isinstance(v, np.generic) else v)
            # A declared size is only a promise: a few-kB file may declare a 100000 x 100000 slice
            # (HDF5 fills unwritten chunks). Refuse before allocating it.
            slice_bytes = int(np.prod(shape[1:], dtype=np.float64)) * 8  # complex64 per slice
            cap = max_slice_bytes()
            if slice_bytes > cap:
                raise ValueError(f"{fname}: kspace declares slices of {' x '.join(map(str, shape[1:]))} "
                                 f"({slice_bytes / 2**30:.3g} GiB each), more than the {cap / 2**30:.3g} GiB "
                                 "this machine allows per slice")
            for key in ("reconstruction_rss", "reconstruction_esc"):
                if key in f:
                    _check_target(fname, f[key], key, shape, h5py)
            # Touch the first and last slices so a truncated file fails here, not mid-iteration.
            ds[0]
            ds[-1]
            return FastMRIVolume(fname, shape, len(shape) == 4, header, attrs,
                                 has_rss="reconstruction_rss" in f, has_esc="reconstruction_esc" in f)
    except ValueError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError, MemoryError) as e:
        raise ValueError(f"{fname}: corrupt or truncated HDF5 content ({_short(e)})") from None


def max_slice_bytes() -> int:
    """Largest k-space slice (bytes, complex64) the reader accepts: a quarter of the physical memory.

    fastMRI's largest slices (brain, 20 coils, 768 x 396) take 49 MB; a slice of several GiB is a
    malformed or hostile file. ``BAYESMRI_MAX_SLICE_BYTES`` overrides the bound.
    """
    env = os.environ.get("BAYESMRI_MAX_SLICE_BYTES")
    if env:
        return int(float(env))
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        phys = 16 << 30
    return int(phys // 4)


def _check_target(fname: str, ds, key: str, kshape: tuple, h5py) -> None:
    """The reference ``reconstruction_rss/_esc`` must be a real ``(slices, h, w)`` stack, one per k-space slice."""
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{fname}: '{key}' is not a dataset")
    shape = tuple(int(v) for v in ds.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{fname}: {key} must have shape (slices, h, w), got {shape}")
    if shape[0] != kshape[0]:
        raise ValueError(f"{fname}: {key} has {shape[0]} slice(s) but kspace has {kshape[0]}")
    if ds.dtype.kind not in "fiu":
        raise ValueError(f"{fname}: {key} must be a real magnitude image, got dtype {ds.dtype}")
    if shape[1] * shape[2] > 4 * kshape[-2] * kshape[-1]:
        raise ValueError(f"{fname}: {key} slices of {shape[1]} x {shape[2]} are larger than the k-space "
                         f"matrix {kshape[-2]} x {kshape[-1]}")


def _read_kspace_slice(fname: str, i: int, multicoil: bool) -> torch.Tensor:
    h5py = _h5py()
    try:
        with h5py.File(fname, "r") as f:
            k = np.asarray(f["kspace"][i])
    except (OSError, KeyError) as e:
        raise ValueError(f"{fname}: cannot read kspace slice {i} ({_short(e)})") from None
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as an error
        k32 = k.astype(np.complex64)
    if k.dtype != np.complex64 and np.isfinite(k).all() and not np.isfinite(k32).all():
        # float64 data beyond float32's range: say so instead of handing on infinities
        raise ValueError(f"{fname}: kspace slice {i} has values up to {np.abs(k).max():.3g}, beyond single "
                         "precision (3.4e38); rescale the file")
    t = torch.from_numpy(k32)
    return t if multicoil else t[None]


# ----------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------
def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre crop the last two axes to ``size`` (clipped to the input size), fastMRI's convention
    (start ``(n - s) // 2``)."""
    H, W = x.shape[-2:]
    h, w = min(int(size[0]), H), min(int(size[1]), W)
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def write_fastmri_h5(path, kspace, *, reconstruction=None, recon_size: tuple[int, int] | None = None,
                     acquisition: str = "CORPD_FBK", header: str | None = None, mask=None,
                     num_low_frequency: int | None = None, patient_id: str = "synthetic",
                     extra_attrs: dict | None = None, extra_datasets: dict | None = None) -> str:
    """Write a file in the exact fastMRI layout, atomically (temporary file in the same folder + rename).

    Parameters
    ----------
    path : output ``.h5`` path.
    kspace : array/tensor ``(slices, coils, H, W)`` (multi-coil) or ``(slices, H, W)`` (single-coil), complex.
    reconstruction : ``(slices, h, w)`` real, optional; default: RSS (multi-coil) / magnitude (single-coil)
        of ``ifft2c(kspace)`` centre-cropped to ``recon_size`` (default ``(min(H, W), min(H, W))``). Stored
        as ``reconstruction_rss`` (multi-coil) or ``reconstruction_esc`` (single-coil); attribute ``max``
        is its maximum and ``norm`` its l2 norm.
    acquisition : str attribute. header : ISMRMRD XML (default: :func:`make_ismrmrd_header` from the
        shapes). mask : optional ``(W,)`` 0/1 array stored as ``mask`` (fastMRI test files) together
        with ``num_low_frequency``. extra_datasets : ``{name: array}`` written as datasets (e.g. the simulation's
        coil maps ``maps_true``).

    Returns
    -------
    The path written.

    Raises
    ------
    ValueError / TypeError for bad input; nothing is left at ``path`` (or beside it) on failure.
    """
    path = os.fspath(path)
    k = kspace.detach().cpu().numpy() if isinstance(kspace, torch.Tensor) else np.asarray(kspace)
    if not np.iscomplexobj(k):
        raise TypeError(f"kspace must be complex, got dtype {k.dtype}")
    if k.ndim not in (3, 4):
        raise ValueError(f"kspace must have shape (slices, H, W) or (slices, coils, H, W), got {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError("kspace contains non-finite values")
    k = k.astype(np.complex64)
    multicoil = k.ndim == 4
    H, W = k.shape[-2:]
    if recon_size is None:
        recon_size = (min(H, W), min(H, W))
    if reconstruction is None:
        img = ifft2c(torch.from_numpy(k))
        mag = rss(img, dim=1) if multicoil else img.abs()
        rec = center_crop(mag, recon_size).numpy().astype(np.float32)
    else:
        rec = (reconstruction.detach().cpu().numpy() if isinstance(reconstruction, torch.Tensor)
               else np.asarray(reconstruction)).astype(np.float32)
        if rec.ndim != 3 or rec.shape[0] != k.shape[0]:
            raise ValueError(f"reconstruction must have shape ({k.shape[0]}, h, w), got {rec.shape}")
    if header is None:
        header = make_ismrmrd_header((H, W, 1), (rec.shape[-2], rec.shape[-1], 1), acquisition=acquisition)
    h5py = _h5py()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("reconstruction_rss" if multicoil else "reconstruction_esc", data=rec)
        f.create_dataset("ismrmrd_header", data=np.bytes_(header.encode("utf-8")))
        if mask is not None:
            m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
            f.create_dataset("mask", data=m)
        f.attrs["acquisition"] = acquisition
        f.attrs["max"] = float(rec.max()) if rec.size else 0.0
        f.attrs["norm"] = float(np.linalg.norm(rec))
        f.attrs["patient_id"] = patient_id
        if num_low_frequency is not None:
            f.attrs["num_low_frequency"] = int(num_low_frequency)
        for kk, vv in (extra_datasets or {}).items():
            f.create_dataset(kk, data=vv.detach().cpu().numpy() if isinstance(vv, torch.Tensor) else np.asarray(vv))
        for kk, vv in (extra_attrs or {}).items():
            f.attrs[kk] = vv
    return path


# ----------------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------------
def estimate_noise_sigma(kspace: torch.Tensor, fraction: float = 0.1) -> float:
    """Noise standard deviation per complex sample from the four k-space corners of fully sampled data.

    The corners (``fraction`` of each axis from each edge) hold little signal, so
    ``sigma^2 = mean |k|^2`` there is a slight overestimate of the noise power (an upper bound).
    """
    H, W = kspace.shape[-2:]
    a, b = max(1, int(fraction * H)), max(1, int(fraction * W))
    corners = [kspace[..., :a, :b], kspace[..., :a, -b:], kspace[..., -a:, :b], kspace[..., -a:, -b:]]
    p = torch.cat([c.reshape(-1) for c in corners]).abs().pow(2).double().mean()
    return float(p.sqrt())


def _mask_for(pattern, shape, acceleration, num_acs, seed, mask_kwargs):
    from ..physics.masks import make_mask

    return make_mask(pattern, shape, acceleration, num_acs=num_acs, seed=seed, **(mask_kwargs or {}))


def preprocess_multicoil(kspace: torch.Tensor, *, num_virtual: int | None = 8, crop=(320, 320),
                         pattern: str = "gro", acceleration: float = 4.0, num_acs=13, mask=None,
                         mask_seed=None, espirit: bool = True, espirit_options: dict | None = None,
                         metadata: dict | None = None, mask_kwargs: dict | None = None) -> MRISample:
    """Wen et al.'s multi-coil preprocessing of one fully sampled slice ``(C, H, W)`` -> :class:`MRISample`.

    1. SVD coil compression to ``num_virtual`` virtual coils (skipped if ``None`` or ``C <= num_virtual``);
    2. centre crop of the coil images ``ifft2c(k)`` to ``crop`` (clipped to the image size);
    3. re-synthesised k-space ``k = fft2c(cropped coil images)``;
    4. mask (given, or ``make_mask(pattern, crop, acceleration, num_acs, seed=mask_seed)``), measured
       ``y = M k``;
    5. ESPIRiT maps from the ACS of ``y`` (``espirit=True``; else computed lazily on demand);
    6. ``scale`` = 95th percentile of ``rss(ifft2c(y))``; all tensors are divided by it.

    The ground truth ``target = sum_c conj(S_c) x_c`` (ESPIRiT coil combination of the fully sampled
    coil images; only when ``espirit=True``) and ``coil_images`` are kept; ``noise_sigma`` is estimated
    from the k-space corners (:func:`estimate_noise_sigma`; an upper bound).
    """
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex() or kspace.ndim != 3:
        raise ValueError(f"kspace must be a complex tensor (C, H, W), got "
                         f"{getattr(kspace, 'shape', type(kspace).__name__)}")
    k = kspace.to(torch.complex64)
    C = k.shape[0]
    if num_virtual is not None and C > num_virtual:
        k, _ = svd_coil_compression(k, int(num_virtual))
    coil = center_crop(ifft2c(k), crop)
    k = fft2c(coil)
    h, w = k.shape[-2:]
    if mask is None:
        mask = _mask_for(pattern, (h, w), acceleration, num_acs, mask_seed, mask_kwargs)
    mask = torch.as_tensor(mask, dtype=torch.float32)
    if mask.ndim not in (1, 2) or mask.shape[-1] != w or (mask.ndim == 2 and mask.shape[0] != h):
        raise ValueError(f"mask must have shape ({w},) or ({h}, {w}), got {tuple(mask.shape)}")
    y = apply_mask(k, mask)
    sigma = estimate_noise_sigma(k)
    scale = intensity_scale(rss(ifft2c(y), dim=-3), 0.95)
    md = dict(metadata or {})
    from ..physics.masks import acceleration_of

    md.setdefault("pattern", pattern)
    md["acceleration"] = acceleration_of(mask, (h, w))
    md["num_acs"] = num_acs
    md["noise_sigma_estimated"] = True
    sample = MRISample(kspace=y / scale, img_shape=(h, w), mask=mask, coil_images=coil / scale,
                       noise_sigma=sigma / scale, scale=scale, num_acs=num_acs, metadata=md,
                       espirit_options=dict(espirit_options or {}))
    if espirit and C > 1:
        S = sample.maps_espirit
        sample.target = (S.conj() * sample.coil_images).sum(0)
    elif C == 1:
        sample._maps_espirit = torch.ones(1, h, w, dtype=torch.complex64)
        sample.target = sample.coil_images[0]
    return sample


def preprocess_singlecoil(kspace: torch.Tensor, **kw) -> MRISample:
    """Single-coil slice ``(H, W)`` or ``(1, H, W)``: crop, mask, normalise as :func:`preprocess_multicoil`
    (maps are ones; ``target`` is the cropped complex image)."""
    if kspace.ndim == 2:
        kspace = kspace[None]
    kw["num_virtual"] = None
    return preprocess_multicoil(kspace, **kw)


class FastMRIDataset(torch.utils.data.Dataset):
    """Slices of fastMRI files, preprocessed as Wen et al. (:func:`preprocess_multicoil`); yields
    :class:`MRISample`.

    Parameters
    ----------
    paths : a file, a folder (all ``*.h5`` inside, sorted) or a list of files.
    anatomy : {"auto", "knee", "brain"}: chooses the defaults of ``crop`` and ``num_acs``
        (:data:`ANATOMY_DEFAULTS`); ``auto``: ``brain`` if the file name contains ``brain``, else ``knee``.
    crop, num_acs : override the anatomy defaults. num_virtual : virtual coils (8).
    pattern, acceleration : mask (GRO, 4); the mask seed is
        :func:`bayesmri.physics.masks.seed_from_name` ``(fname, slice)`` plus ``seed``.
    skip_first, skip_last : drop that many slices at each end of every volume (edge slices are
        mostly noise). slice_range : ``(start, stop)`` kept after skipping, per volume (Python slice).
    espirit : compute ESPIRiT maps eagerly (needed for ``target``); ``espirit_options`` for them.

    Raises
    ------
    ValueError
        For any malformed file (at construction, naming the file), or no slices left after filtering.
    """

    def __init__(self, paths, *, anatomy: str = "auto", crop=None, num_acs=None, num_virtual: int | None = 8,
                 pattern: str = "gro", acceleration: float | None = None, seed: int = 0, skip_first: int = 0,
                 skip_last: int = 0, slice_range: tuple[int, int] | None = None, espirit: bool = True,
                 espirit_options: dict | None = None, mask_kwargs: dict | None = None):
        if isinstance(paths, (str, os.PathLike)):
            p = os.fspath(paths)
            if os.path.isdir(p):
                files = sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith(".h5"))
                if not files:
                    raise ValueError(f"{p}: folder contains no .h5 files")
            else:
                files = [p]
        else:
            files = [os.fspath(x) for x in paths]
        if anatomy not in ("auto", "knee", "brain"):
            raise ValueError(f"anatomy must be 'auto', 'knee' or 'brain', got {anatomy!r}")
        if skip_first < 0 or skip_last < 0:
            raise ValueError("skip_first and skip_last must be >= 0")
        self.volumes = [read_fastmri_h5(f) for f in files]
        self.anatomy, self.crop, self.num_acs = anatomy, crop, num_acs
        self.num_virtual, self.pattern, self.acceleration, self.seed = num_virtual, pattern, acceleration, seed
        self.espirit, self.espirit_options, self.mask_kwargs = espirit, dict(espirit_options or {}), mask_kwargs
        self.index: list[tuple[int, int]] = []
        for v_i, vol in enumerate(self.volumes):
            idx = list(range(vol.num_slices))[skip_first:vol.num_slices - skip_last]
            if slice_range is not None:
                idx = idx[slice(*slice_range)]
            self.index += [(v_i, s) for s in idx]
        if not self.index:
            raise ValueError("no slices left after skip_first/skip_last/slice_range filtering")

    def _defaults(self, vol: FastMRIVolume) -> dict:
        an = self.anatomy
        if an == "auto":
            an = "brain" if "brain" in os.path.basename(vol.fname).lower() else "knee"
        d = dict(ANATOMY_DEFAULTS[an])
        if self.crop is not None:
            d["crop"] = (self.crop, self.crop) if isinstance(self.crop, int) else tuple(self.crop)
        if self.num_acs is not None:
            d["num_acs"] = self.num_acs
        if self.acceleration is not None:
            d["acceleration"] = float(self.acceleration)
        d["anatomy"] = an
        return d

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> MRISample:
        from ..physics.masks import seed_from_name

        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} slices")
        v_i, s = self.index[i]
        vol = self.volumes[v_i]
        d = self._defaults(vol)
        k = vol.read_slice(s)
        md = {"fname": os.path.basename(vol.fname), "slice": s, "anatomy": d["anatomy"],
              "acquisition": vol.attrs.get("acquisition"), "split": "fastmri"}
        mseed = (seed_from_name(vol.fname, s) + self.seed) % (2**63)
        return preprocess_multicoil(k, num_virtual=self.num_virtual if vol.multicoil else None, crop=d["crop"],
                                    pattern=self.pattern, acceleration=d["acceleration"], num_acs=d["num_acs"],
                                    mask_seed=mseed, espirit=self.espirit, espirit_options=self.espirit_options,
                                    metadata=md, mask_kwargs=self.mask_kwargs)
