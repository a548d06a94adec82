"""ISMRMRD raw data (the HDF5 standard written by the scanner converters ``siemens_to_ismrmrd``, ...).

Read with h5py in the documented layout (``/<dataset>/xml``: the XML header; ``/<dataset>/data``: one
compound record per acquisition, ``head`` (AcquisitionHeader), ``traj`` and ``data`` (float32,
interleaved real/imaginary, channel-major: ``data[c, s]``)). All acquisition headers are read in one
vectorised pass; the ``ismrmrd`` package from PyPI reads them one Python object at a time and needs
``xsdata``, so it is not used.

What :func:`read_ismrmrd` does, in the order of the Gadgetron's Cartesian chain:

1. **Noise**: acquisitions flagged ``ACQ_IS_NOISE_MEASUREMENT`` give the coil noise covariance
   ``Psi = n n^H / N``. It is scaled to the imaging readouts by the dwell-time ratio
   ``t_noise / t_acq`` (noise variance is proportional to the receiver bandwidth ``1 / t``) and divided by
   the header's ``relativeReceiverNoiseBandwidth`` where given (the noise scan averages the receiver
   filter's roll-off; the central band that survives the oversampling crop is that much noisier). Every
   imaging readout is then whitened, ``y <- L^{-1} y`` with ``Psi = L L^H``: the noise is ``CN(0, I)``,
   one unit of variance per complex sample, the convention of BART and of bayesmri's samplers.
2. **Imaging readouts**: navigator, phase-correction, dummy, feedback, surface-coil-correction and
   phase-stabilisation acquisitions are skipped; reversed readouts (EPI) and non-Cartesian trajectories
   are refused. Each readout is placed on the encoded matrix at its ``kspace_encode_step_1`` (shifted so
   that ``encodingLimits`` centre lands on ``W // 2``) with its ``center_sample`` on ``H // 2`` after the
   ``discard_pre/post`` samples are dropped. Readout = image axis H (ISMRMRD x), phase encoding = W.
3. **Images**: one 2-D image per distinct (slice, contrast, phase, repetition, set); readouts of the
   same line in several averages (or segments) are averaged. These images are the slice stack of
   ``bayesmri recon`` (``labels`` says which is which).
4. **Calibration lines** (``ACQ_IS_PARALLEL_CALIBRATION``, calibration only, and
   ``..._AND_IMAGING``): with ``calibrationMode`` ``embedded`` / ``interleaved`` / absent they belong to
   the same acquisition and enter the data (the mask is the set of acquired lines, ACS included, as in
   fastMRI); with ``separate`` / ``external`` the calibration-only lines are kept apart, for the coil maps
   only. With ``interleaved`` (TSENSE: each repetition samples other lines) the coil maps come from the
   time average of the repetitions of each slice, which fills k-space where one frame cannot.
5. **Readout oversampling**: where the encoded matrix ``x`` exceeds the recon matrix ``x``, inverse FFT
   along the readout, centre crop, FFT back (fastMRI's crop; white noise stays white with the same
   variance, since both transforms are orthonormal).

Geometry: the recon space FOV and matrix (voxel size) and, per image, the position and direction
cosines of its first readout (``orientation``).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ACQ_FLAGS", "KSpaceVolume", "read_ismrmrd", "is_ismrmrd", "ismrmrd_dataset_name"]

#: ISMRMRD acquisition flags (bit number, 1-based, as in ``ismrmrd.h``).
ACQ_FLAGS = {
    "ACQ_IS_NOISE_MEASUREMENT": 19, "ACQ_IS_PARALLEL_CALIBRATION": 20,
    "ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING": 21, "ACQ_IS_REVERSE": 22, "ACQ_IS_NAVIGATION_DATA": 23,
    "ACQ_IS_PHASECORR_DATA": 24, "ACQ_IS_HPFEEDBACK_DATA": 26, "ACQ_IS_DUMMYSCAN_DATA": 27,
    "ACQ_IS_RTFEEDBACK_DATA": 28, "ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA": 29,
    "ACQ_IS_PHASE_STABILIZATION_REFERENCE": 30, "ACQ_IS_PHASE_STABILIZATION": 31,
}
_SKIPPED = ("ACQ_IS_NAVIGATION_DATA", "ACQ_IS_PHASECORR_DATA", "ACQ_IS_HPFEEDBACK_DATA", "ACQ_IS_DUMMYSCAN_DATA",
            "ACQ_IS_RTFEEDBACK_DATA", "ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA",
            "ACQ_IS_PHASE_STABILIZATION_REFERENCE", "ACQ_IS_PHASE_STABILIZATION")
#: Loop counters that make distinct images (``average`` and ``segment`` are combined within one image).
IMAGE_LABELS = ("slice", "contrast", "phase", "repetition", "set")


def _bit(name: str) -> np.uint64:
    return np.uint64(1) << np.uint64(ACQ_FLAGS[name] - 1)


@dataclass
class KSpaceVolume:
    """A stack of 2-D Cartesian k-space images read into memory (ISMRMRD or BART input).

    Offers the interface of :class:`bayesmri.data.fastmri.FastMRIVolume` that ``recon`` reads
    (``num_slices``, ``shape``, ``read_slice``, ``read_target``, ``header``, ``attrs``) plus what those
    formats add.

    Attributes
    ----------
    fname : the file. format : ``"ismrmrd"`` or ``"cfl"``.
    kspace : ndarray ``(N, C, H, W)`` complex64, zeros off the mask (prewhitened and at the recon matrix
        for ISMRMRD).
    masks : ndarray ``(N, W)`` float32 0/1 (acquired lines) or None (the nonzero k-space decides).
    header : dict as :func:`bayesmri.data.fastmri.parse_ismrmrd_header` (matrix sizes and FOV for
        :func:`~bayesmri.data.fastmri.image_geometry`).
    labels : one dict per image (ISMRMRD loop counters, BART indices) saying which image it is.
    noise : JSON description of the noise handling (``prewhitened``, ``noise_scans``, ``dwell_ratio``...).
    noise_std : std per complex k-space sample after prewhitening (1 / sqrt(averages)), None if unknown.
    whitening : ``(C, C)`` complex matrix applied to the data (explicit coil maps need the same), or None.
    calibration : ``(N, C, H, W)`` k-space for the coil maps where it differs from ``kspace`` (separate
        or interleaved calibration), or None.
    num_acs : calibration lines per image (None where none were flagged).
    orientation : per image ``position`` (mm), ``read_dir``, ``phase_dir``, ``slice_dir``,
        ``patient_table_position`` (ISMRMRD patient coordinates), or None.
    extra_dims : BART input: the dims 5..15 that were flattened into the stack (to write outputs back).
    summary : one line describing what was read.
    """

    fname: str
    format: str
    kspace: np.ndarray
    masks: np.ndarray | None
    header: dict
    labels: list = field(default_factory=list)
    noise: dict = field(default_factory=dict)
    noise_std: float | None = None
    whitening: np.ndarray | None = None
    calibration: np.ndarray | None = None
    num_acs: list = field(default_factory=list)
    orientation: list | None = None
    extra_dims: tuple | None = None
    summary: str = ""
    attrs: dict = field(default_factory=dict)
    has_rss: bool = False
    has_esc: bool = False
    multicoil: bool = True

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.kspace.shape)

    @property
    def num_slices(self) -> int:
        return int(self.kspace.shape[0])

    def read_slice(self, i: int) -> torch.Tensor:
        """k-space of image ``i``, ``(C, H, W)`` complex64."""
        return torch.from_numpy(np.ascontiguousarray(self.kspace[i]))

    def read_mask(self, i: int) -> torch.Tensor | None:
        """Acquired lines of image ``i``, ``(W,)`` float32, or None (use the nonzero k-space)."""
        return None if self.masks is None else torch.from_numpy(np.ascontiguousarray(self.masks[i]))

    def read_calibration(self, i: int) -> torch.Tensor | None:
        """k-space ``(C, H, W)`` to estimate image ``i``'s coil maps from, or None (its own k-space)."""
        return None if self.calibration is None else torch.from_numpy(np.ascontiguousarray(self.calibration[i]))

    def read_target(self, i: int):
        return None


# --------------------------------------------------------------------------------------------------
def ismrmrd_dataset_name(f) -> str | None:
    """Name of the first group of open HDF5 file ``f`` holding ``xml`` and ``data`` (ISMRMRD), or None."""
    if "dataset" in f and _is_dataset_group(f["dataset"]):
        return "dataset"
    for name in f:
        if _is_dataset_group(f[name]):
            return name
    return None


def _is_dataset_group(g) -> bool:
    import h5py

    return isinstance(g, h5py.Group) and "xml" in g and "data" in g


def is_ismrmrd(fname) -> bool:
    """True if ``fname`` is an HDF5 file with an ISMRMRD dataset group."""
    import h5py

    try:
        with h5py.File(fname, "r") as f:
            return ismrmrd_dataset_name(f) is not None
    except OSError:
        return False


def _fft1c(x: np.ndarray, axis: int, inverse: bool) -> np.ndarray:
    # centred orthonormal 1-D FFT, the 1-D form of bayesmri.physics.fft2c
    f = np.fft.ifft if inverse else np.fft.fft
    return np.fft.fftshift(f(np.fft.ifftshift(x, axes=axis), axis=axis, norm="ortho"), axes=axis)


def remove_readout_oversampling(k: np.ndarray, nx: int) -> np.ndarray:
    """Crop the readout axis (-2) of k-space ``(..., X, W)`` to ``nx`` in image space (inverse FFT along
    the readout, centre crop with fastMRI's start ``(X - nx) // 2``, FFT back)."""
    X = k.shape[-2]
    if nx >= X:
        return k
    img = _fft1c(k, -2, inverse=True)
    top = (X - nx) // 2
    return _fft1c(img[..., top:top + nx, :], -2, inverse=False).astype(np.complex64)


def read_ismrmrd(fname, dataset: str | None = None, *, prewhiten: bool = True, remove_oversampling: bool = True,
                 acs_in_data: bool | None = None) -> KSpaceVolume:
    """Read Cartesian ISMRMRD raw data into a :class:`KSpaceVolume` (see the module docstring).

    Parameters
    ----------
    fname : path of the ISMRMRD ``.h5`` file.
    dataset : group name (default: ``dataset``, else the first group with ``xml`` and ``data``).
    prewhiten : whiten with the noise scans when the file has any (default True).
    remove_oversampling : crop the readout to the recon matrix (default True).
    acs_in_data : put calibration-only lines into the reconstructed data (default: unless the header's
        ``calibrationMode`` is ``separate`` or ``external``).

    Returns
    -------
    KSpaceVolume with ``kspace (N, C, H, W)``, ``masks (N, W)``, ``labels``, ``orientation``, ``noise``.

    Raises
    ------
    ValueError
        One line naming the file: not HDF5, no ISMRMRD group, unparsable header, non-Cartesian or 3-D
        encoding, reversed readouts, inconsistent channel counts, readouts outside the encoded matrix,
        truncated records, no imaging data, a singular noise covariance.
    """
    from .fastmri import _short, max_slice_bytes, open_h5, parse_ismrmrd_header

    fname = os.fspath(fname)
    f = open_h5(fname)
    try:
        with f:
            name = dataset or ismrmrd_dataset_name(f)
            if name is None or name not in f or not _is_dataset_group(f[name]):
                raise ValueError(f"{fname}: no ISMRMRD dataset (a group with 'xml' and 'data'"
                                 f"{'' if dataset is None else f' named {dataset!r}'})")
            xml = f[name]["xml"][()]
            xml = xml.reshape(-1)[0] if isinstance(xml, np.ndarray) and xml.size else xml
            header = parse_ismrmrd_header(xml, fname)
            ds = f[name]["data"]
            names = ds.dtype.names or ()
            if not {"head", "data"} <= set(names):
                raise ValueError(f"{fname}: {name}/data is not an ISMRMRD acquisition table "
                                 f"(fields {', '.join(names) or 'none'})")
            raw = ds[()]
    except ValueError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError, IndexError) as e:
        raise ValueError(f"{fname}: corrupt or truncated ISMRMRD content ({_short(e)})") from None
    if raw.size == 0:
        raise ValueError(f"{fname}: the ISMRMRD dataset has no acquisitions")
    head = raw["head"]
    try:
        flags = head["flags"].astype(np.uint64)
        ns = head["number_of_samples"].astype(np.int64)
        nc = head["active_channels"].astype(np.int64)
        idx = head["idx"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"{fname}: acquisition headers lack a field ({_short(e)})") from None
    lengths = np.fromiter((np.size(d) for d in raw["data"]), dtype=np.int64, count=raw.size)
    bad = np.flatnonzero(lengths != 2 * ns * nc)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{fname}: acquisition {i} holds {lengths[i]} values, its header says {ns[i]} samples x "
                         f"{nc[i]} channels (x2 for re/im): truncated or corrupt file")

    def has(name):
        return (flags & _bit(name)) != 0

    enc_ref = head["encoding_space_ref"].astype(np.int64) if "encoding_space_ref" in head.dtype.names else 0
    noise_sel = has("ACQ_IS_NOISE_MEASUREMENT")
    skipped = np.zeros(raw.size, bool)
    for n in _SKIPPED:
        skipped |= has(n)
    img_sel = ~noise_sel & ~skipped & (np.asarray(enc_ref) == 0)
    if not img_sel.any():
        raise ValueError(f"{fname}: no imaging acquisitions (only noise, navigator or other non-imaging scans)")
    traj_kind = (header.get("trajectory") or "cartesian").lower()
    if traj_kind != "cartesian":
        raise ValueError(f"{fname}: trajectory {header.get('trajectory')!r} is not supported (Cartesian only)")
    if (has("ACQ_IS_REVERSE") & img_sel).any():
        raise ValueError(f"{fname}: reversed readouts (ACQ_IS_REVERSE, EPI) need phase correction, which is not "
                         "supported")
    Ex, Ey, Ez = (int(v or 1) for v in header["encoded_matrix"])
    if Ez > 1 or (idx["kspace_encode_step_2"][img_sel] > 0).any():
        raise ValueError(f"{fname}: 3-D encoding (encoded z = {Ez}) is not supported; 2-D multi-slice only")
    chans = np.unique(nc[img_sel])
    if chans.size != 1 or chans[0] < 1:
        raise ValueError(f"{fname}: imaging acquisitions have {', '.join(map(str, chans))} active channels; "
                         "expected one channel count")
    C = int(chans[0])

    def as_complex(i) -> np.ndarray:  # (C, samples) complex64
        d = np.asarray(raw["data"][i], dtype=np.float32)
        return d.view(np.complex64).reshape(int(nc[i]), int(ns[i]))

    # ---------------------------------------------------------------- noise
    W = None
    t_acq = float(np.median(head["sample_time_us"][img_sel])) if "sample_time_us" in head.dtype.names else 0.0
    noise = {"prewhitened": False, "noise_scans": int(noise_sel.sum())}
    if noise_sel.any() and prewhiten:
        from ..physics.coils import noise_covariance, whitening_matrix

        ids = np.flatnonzero(noise_sel)
        if (nc[ids] != C).any():
            raise ValueError(f"{fname}: noise scans have {int(nc[ids][0])} channels, imaging data {C}")
        n = np.concatenate([as_complex(i) for i in ids], axis=1)
        if n.shape[1] < 2 * C:
            raise ValueError(f"{fname}: {n.shape[1]} noise samples per coil are too few to whiten {C} coils")
        cov = noise_covariance(torch.from_numpy(n).to(torch.complex128))
        t_noise = float(np.median(head["sample_time_us"][ids]))
        ratio = t_noise / t_acq if t_noise > 0 and t_acq > 0 else 1.0
        bw = header.get("receiver_noise_bandwidth") or 1.0
        cov = cov * (ratio / bw)
        try:
            W = whitening_matrix(cov).numpy()
        except ValueError as e:
            raise ValueError(f"{fname}: noise covariance of the noise scans: {e}") from None
        noise.update(prewhitened=True, noise_samples_per_coil=int(n.shape[1]), dwell_ratio=ratio,
                     relative_receiver_noise_bandwidth=float(bw),
                     noise_std_per_coil=[float(v) for v in np.sqrt(np.diag(cov.numpy()).real)])
    elif noise_sel.any():
        noise["reason"] = "prewhitening switched off"
    else:
        noise["reason"] = "no noise scans (ACQ_IS_NOISE_MEASUREMENT)"

    # ---------------------------------------------------------------- image assembly
    ids = np.flatnonzero(img_sel)
    keys = np.stack([idx[k][ids].astype(np.int64) for k in IMAGE_LABELS], axis=1)
    ukeys, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    N = int(ukeys.shape[0])
    need = N * C * Ex * Ey * 8 * 3
    if need > 2 * max_slice_bytes():
        raise ValueError(f"{fname}: {N} images of {C} x {Ex} x {Ey} need about {need / 2**30:.3g} GiB, more than "
                         "half of this machine's memory")
    mode = (header.get("calibration_mode") or "").lower() or None
    if acs_in_data is None:
        acs_in_data = mode not in ("separate", "external")
    centre = header.get("enc_limits_center")
    shift = Ey // 2 - (centre if centre is not None else Ey // 2)
    lines = idx["kspace_encode_step_1"][ids].astype(np.int64) + shift
    out_of_range = np.flatnonzero((lines < 0) | (lines >= Ey))
    if out_of_range.size:
        j = int(out_of_range[0])
        raise ValueError(f"{fname}: acquisition {int(ids[j])} has kspace_encode_step_1 "
                         f"{int(idx['kspace_encode_step_1'][ids[j]])}, outside the encoded matrix of {Ey} lines "
                         f"(centre {centre})")
    pre = head["discard_pre"][ids].astype(np.int64)
    post = head["discard_post"][ids].astype(np.int64)
    csample = head["center_sample"][ids].astype(np.int64)
    cal_only = has("ACQ_IS_PARALLEL_CALIBRATION")[ids] & ~has("ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING")[ids]
    cal_any = cal_only | has("ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING")[ids]
    ksum = np.zeros((N, C, Ex, Ey), np.complex128)
    count = np.zeros((N, Ey), np.int64)
    csum = np.zeros_like(ksum) if not acs_in_data else None
    ccount = np.zeros_like(count) if not acs_in_data else None
    for j, i in enumerate(ids):
        d = as_complex(i)[:, pre[j]:int(ns[i]) - post[j]]
        n_s = d.shape[1]
        c0 = csample[j] - pre[j] if csample[j] > 0 else n_s // 2
        start = Ex // 2 - c0
        if n_s == Ex and csample[j] == 0:
            start = 0  # no centre given: a full readout fills the matrix
        if start < 0 or start + n_s > Ex or n_s < 1:
            raise ValueError(f"{fname}: acquisition {int(i)} has {n_s} samples with centre {c0}, which do not fit "
                             f"the encoded readout of {Ex}")
        if cal_only[j] and not acs_in_data:
            csum[inverse[j], :, start:start + n_s, lines[j]] += d
            ccount[inverse[j], lines[j]] += 1
        else:
            ksum[inverse[j], :, start:start + n_s, lines[j]] += d
            count[inverse[j], lines[j]] += 1
    if not (count > 0).any(axis=1).all():
        empty = int(np.flatnonzero(~(count > 0).any(axis=1))[0])
        raise ValueError(f"{fname}: image {dict(zip(IMAGE_LABELS, map(int, ukeys[empty])))} has calibration lines "
                         "only and no imaging data")

    def finish(s, c):
        k = s / np.maximum(c, 1)[:, None, None, :]
        if W is not None:
            k = np.einsum("dc,nchw->ndhw", W, k)
        if remove_oversampling:
            rx = (header.get("recon_matrix") or (None,))[0]
            if rx and 0 < int(rx) < Ex:
                k = remove_readout_oversampling(k, int(rx))
        return k.astype(np.complex64)

    kspace = finish(ksum, count)
    masks = (count > 0).astype(np.float32)
    calibration = None
    # ---------------------------------------------------------------- calibration data for the coil maps
    if not acs_in_data and (ccount > 0).any():
        cal = np.where((ccount > 0)[:, None, None, :], csum, ksum)
        ccnt = np.where(ccount > 0, ccount, count)
        # an image without its own reference lines borrows those of another image of the same slice
        has_cal = (ccount > 0).any(axis=1)
        for n in np.flatnonzero(~has_cal):
            same = np.flatnonzero(has_cal & (ukeys[:, 0] == ukeys[n, 0]))
            if same.size:
                cal[n], ccnt[n] = cal[same[0]], ccnt[same[0]]
        calibration = finish(cal, ccnt)
    elif mode == "interleaved" and N > 1:
        # TSENSE: the repetitions sample other lines; their average fills k-space for the maps
        group = [tuple(k) for k in ukeys[:, [0, 1, 4]]]  # slice, contrast, set
        cal = np.empty_like(ksum)
        ccnt = np.empty_like(count)
        for g in set(group):
            members = [n for n, gg in enumerate(group) if gg == g]
            cal[members] = ksum[members].sum(0)
            ccnt[members] = count[members].sum(0)
        if any(len([n for n, gg in enumerate(group) if gg == g]) > 1 for g in set(group)):
            calibration = finish(cal, ccnt)
    # ---------------------------------------------------------------- noise level after averaging
    sampled = count[count > 0]
    uniform = sampled.size and sampled.min() == sampled.max()
    noise_std = (1.0 / float(np.sqrt(sampled[0]))) if (W is not None and uniform) else None
    if W is not None and not uniform:
        warnings.warn(f"{fname}: k-space lines were averaged {sampled.min()} to {sampled.max()} times, so the "
                      "noise level varies across k-space; the samplers estimate it from the data", stacklevel=2)
    if W is not None:
        noise["averages"] = int(sampled[0]) if uniform else [int(sampled.min()), int(sampled.max())]
    # ---------------------------------------------------------------- labels and geometry
    labels, orient, num_acs = [], [], []
    first = np.zeros(N, np.int64)
    seen = np.zeros(N, bool)
    for j, n in enumerate(inverse):
        if not seen[n]:
            seen[n], first[n] = True, ids[j]
    for n in range(N):
        labels.append({k: int(v) for k, v in zip(IMAGE_LABELS, ukeys[n])})
        a = int(first[n])
        orient.append({k: [float(v) for v in head[k][a]] for k in
                       ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position")
                       if k in head.dtype.names})
        acs = int(np.unique(lines[(inverse == n) & cal_any]).size)
        num_acs.append(acs or None)
    rx = (header.get("recon_matrix") or (None,))[0]
    parts = [f"ISMRMRD, {N} image(s) ({' x '.join(k for k in IMAGE_LABELS if np.unique(ukeys[:, IMAGE_LABELS.index(k)]).size > 1) or 'one slice'})",
             f"{C} coil(s)"]
    if remove_oversampling and rx and 0 < int(rx) < Ex:
        parts.append(f"readout oversampling removed ({Ex} -> {int(rx)})")
    parts.append(f"prewhitened with {noise['noise_scans']} noise scan(s)" if W is not None
                 else f"not prewhitened ({noise['reason']})")
    if any(num_acs):
        parts.append(f"{max(a or 0 for a in num_acs)} calibration line(s)"
                     f" ({mode or 'embedded'}{', for the coil maps only' if not acs_in_data else ''})")
    md = {"calibration_mode": mode, "acs_in_data": bool(acs_in_data), "images": N}
    return KSpaceVolume(fname=fname, format="ismrmrd", kspace=kspace, masks=masks, header=header, labels=labels,
                        noise=noise, noise_std=noise_std, whitening=W, calibration=calibration, num_acs=num_acs,
                        orientation=orient, summary=", ".join(parts), attrs=md)
