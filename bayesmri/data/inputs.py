"""One entry point for the k-space files ``bayesmri recon`` reads, and for explicit coil maps.

Formats (:func:`detect_format`):

- ``fastmri``: HDF5 with a ``kspace`` dataset (:func:`bayesmri.data.fastmri.read_fastmri_h5`);
- ``ismrmrd``: HDF5 with an ISMRMRD group (``xml`` + ``data``; :func:`bayesmri.data.ismrmrd.read_ismrmrd`);
- ``cfl``: a BART ``.cfl``/``.hdr`` pair (:func:`read_cfl_kspace`): dims READ (H), PHS1 (W), PHS2 (must
  be 1), COIL, MAPS (must be 1); every further dimension (TE, TIME, SLICE, AVG, ...) is flattened, first
  index fastest, into the slice stack and restored when results are written as cfl. The mask is the
  nonzero k-space, as ``bart pics`` assumes.

:func:`open_volume` returns an object with the interface of :class:`~bayesmri.data.fastmri.FastMRIVolume`
(``num_slices``, ``shape``, ``read_slice(i)``, ``read_target(i)``, ``header``, ``attrs``); the in-memory
formats are :class:`~bayesmri.data.ismrmrd.KSpaceVolume`. :func:`read_coil_maps` reads explicit coil maps
(``--maps FILE``) from a cfl pair, a ``.npy`` file or an HDF5 dataset and checks them against the data.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .ismrmrd import KSpaceVolume

__all__ = ["FORMATS", "detect_format", "open_volume", "read_cfl_kspace", "read_coil_maps", "maps_tensor",
           "cfl_base", "MAPS_DATASETS"]

FORMATS = ("fastmri", "ismrmrd", "cfl")
#: Dataset names tried, in order, for ``--maps FILE.h5`` without ``:NAME``.
MAPS_DATASETS = ("maps", "sens_maps", "sensitivity_maps", "coil_maps", "csm")


def cfl_base(path) -> str | None:
    """The BART base name of ``path`` (``x`` for ``x``, ``x.cfl`` or ``x.hdr``) if ``x.hdr`` exists, else None."""
    p = os.fspath(path)
    base = p[:-4] if p.endswith((".cfl", ".hdr")) else p
    return base if os.path.isfile(base + ".hdr") else None


def detect_format(path) -> str:
    """``"fastmri"``, ``"ismrmrd"`` or ``"cfl"`` for the input ``path``; ``ValueError`` naming it otherwise."""
    import h5py

    p = os.fspath(path)
    if p.endswith((".cfl", ".hdr")) or (not os.path.exists(p) and cfl_base(p) is not None):
        if cfl_base(p) is None:
            raise ValueError(f"{p}: BART header {p[:-4] if p.endswith(('.cfl', '.hdr')) else p}.hdr not found")
        return "cfl"
    if not os.path.exists(p):
        raise FileNotFoundError(f"input file {p} does not exist")
    if not os.path.isfile(p):
        raise ValueError(f"input {p} is not a file")
    if not h5py.is_hdf5(p):
        raise ValueError(f"input {p} is neither HDF5 (fastMRI or ISMRMRD .h5) nor a BART .cfl/.hdr pair")
    try:
        with h5py.File(p, "r") as f:
            if "kspace" in f:
                return "fastmri"
            from .ismrmrd import ismrmrd_dataset_name

            if ismrmrd_dataset_name(f) is not None:
                return "ismrmrd"
            found = ", ".join(sorted(f.keys())) or "none"
    except OSError as e:
        raise ValueError(f"{p}: not a readable HDF5 file ({str(e).splitlines()[0] if str(e) else e})") from None
    raise ValueError(f"{p}: neither a fastMRI file (dataset 'kspace') nor ISMRMRD raw data (group with 'xml' and "
                     f"'data'); found: {found}")


_CACHE: dict = {}


def open_volume(path, fmt: str | None = None, **options):
    """Open an input file of any supported format (:data:`FORMATS`; detected unless ``fmt`` is given).

    ``options`` go to the format's reader (ISMRMRD: ``prewhiten``, ``remove_oversampling``,
    ``acs_in_data``, ``dataset``). The last in-memory volume is cached (keyed by the file's path, size,
    modification time and the options), so that counting the slices and reading them read the file once.
    """
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; supported: {', '.join(FORMATS)}")
    if fmt == "fastmri":
        from .fastmri import read_fastmri_h5

        return read_fastmri_h5(path)
    real = cfl_base(path) + ".cfl" if fmt == "cfl" else os.fspath(path)
    try:
        st = os.stat(real)
        key = (os.path.realpath(real), st.st_size, st.st_mtime_ns, fmt, tuple(sorted(options.items())))
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    if fmt == "ismrmrd":
        from .ismrmrd import read_ismrmrd

        vol = read_ismrmrd(path, **options)
    else:
        if options:
            raise ValueError(f"options {', '.join(options)} do not apply to BART input")
        vol = read_cfl_kspace(path)
    _CACHE.clear()
    if key is not None:
        _CACHE[key] = vol
    return vol


def _read_cfl(path, what: str) -> np.ndarray:
    """``readcfl`` with its errors as one line naming ``what``; dims padded to BART's 16."""
    from ..bart import readcfl

    base = cfl_base(path)
    if base is None:
        raise ValueError(f"{path}: BART header {os.fspath(path)}.hdr not found ({what})")
    try:
        a = readcfl(base)
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} {path}: {e}") from None
    if a.ndim > 16:
        raise ValueError(f"{what} {path}: {a.ndim} dimensions, BART has 16")
    return a.reshape(a.shape + (1,) * (16 - a.ndim), order="F")


def read_cfl_kspace(path) -> KSpaceVolume:
    """Read BART k-space ``READ x PHS1 x 1 x COIL x 1 x ...`` into a :class:`KSpaceVolume`.

    Dims 5..15 are flattened (Fortran order) into ``N`` images; the mask is the nonzero k-space of each
    image; the geometry is unknown (1 mm voxels). ``extra_dims`` keeps dims 5..15 for the outputs.
    """
    a = _read_cfl(path, "k-space")
    d = a.shape
    fname = os.fspath(path)
    if d[2] > 1:
        raise ValueError(f"{fname}: 3-D k-space (PHS2 = {d[2]}): reconstruct slice by slice after an inverse FFT "
                         "along PHS2 with the slices in the SLICE dimension (bart fft -iu 4; bart transpose 2 13)")
    if d[4] > 1:
        raise ValueError(f"{fname}: k-space has {d[4]} entries along MAPS (dim 4); expected 1")
    H, W, C = d[0], d[1], d[3]
    if H < 2 or W < 2:
        raise ValueError(f"{fname}: k-space of {H} x {W} (READ x PHS1) is not a 2-D image")
    extra = tuple(int(v) for v in d[5:])
    N = int(np.prod(extra))
    k = a.reshape(H, W, C, N, order="F").transpose(3, 2, 0, 1)
    if not np.isfinite(k).all():
        raise ValueError(f"{fname}: k-space contains NaN or Inf")
    labels = [{"bart_index": [int(v) for v in np.unravel_index(n, extra, order="F")]} for n in range(N)]
    header = {"encoded_matrix": (H, W, 1), "recon_matrix": (H, W, 1), "encoded_fov_mm": None, "recon_fov_mm": None}
    dims = [i for i, v in enumerate(extra, start=5) if v > 1]
    what = f"{N} image(s) along BART dim(s) {', '.join(map(str, dims))}" if dims else "1 image"
    return KSpaceVolume(fname=fname, format="cfl", kspace=np.ascontiguousarray(k, dtype=np.complex64), masks=None,
                        header=header, labels=labels, extra_dims=extra,
                        summary=f"BART cfl, {what}, {C} coil(s), mask = nonzero k-space")


def _complex_array(a, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.names and {"real", "imag"} <= set(a.dtype.names):  # ISMRMRD NDArray / h5py compound
        a = a["real"] + 1j * a["imag"]
    if a.dtype.kind not in "fciu" or a.dtype.kind == "b":
        raise ValueError(f"coil maps {where}: dtype {a.dtype} is not numeric")
    return a.astype(np.complex64)


def read_coil_maps(spec, ncoils: int, img_shape: tuple[int, int], n_slices: int) -> np.ndarray:
    """Explicit coil maps from ``spec``, shaped ``(M, C, H, W)`` with ``M`` 1 (all slices) or ``n_slices``.

    ``spec``: a BART ``.cfl`` pair (``READ x PHS1 x 1 x COIL x 1 x ...``; extra dims are slices, one map set
    only), a ``.npy`` array ``(C, H, W)`` or ``(S, C, H, W)``, or an HDF5 file, ``FILE.h5:NAME`` for a
    dataset: ``(C, H, W)`` / ``(S, C, H, W)``, complex or compound ``(real, imag)``. Without ``:NAME`` the
    first of :data:`MAPS_DATASETS` is used; an ISMRMRD file's ``csm`` array (the
    ``ismrmrd_generate_cartesian_shepp_logan`` maps, stored ``(..., C, y, x)``) is transposed to ``(C, x, y)``.

    Raises
    ------
    ValueError
        One line: unreadable file, no dataset, wrong shape (naming the expected ``(C, H, W)``), MAPS > 1,
        non-finite or all-zero maps.
    """
    import h5py

    spec = os.fspath(spec)
    C, (H, W) = int(ncoils), (int(img_shape[0]), int(img_shape[1]))
    want = f"expected ({C}, {H}, {W}) = (coils, H, W) or (slices, {C}, {H}, {W}) to match the k-space"
    path, _, dsname = spec.partition(":") if not os.path.exists(spec) and ":" in spec else (spec, "", "")
    if cfl_base(path) is not None and not path.endswith((".npy", ".h5", ".hdf5")):
        a = _read_cfl(path, "coil maps")
        if a.shape[2] > 1:
            raise ValueError(f"coil maps {path}: PHS2 = {a.shape[2]}; expected 2-D maps READ x PHS1 x 1 x COIL")
        if a.shape[4] > 1:
            raise ValueError(f"coil maps {path}: {a.shape[4]} sets of maps along MAPS (ecalib -m {a.shape[4]}); "
                             "give one set (ecalib -m1)")
        M = int(np.prod(a.shape[5:]))
        maps = a.reshape(a.shape[0], a.shape[1], a.shape[3], M, order="F").transpose(3, 2, 0, 1)
        got = f"READ x PHS1 x COIL = {a.shape[0]} x {a.shape[1]} x {a.shape[3]}"
    elif not os.path.isfile(path):
        raise ValueError(f"coil maps {path}: no such file")
    elif path.endswith(".npy"):
        try:
            maps = _complex_array(np.load(path, allow_pickle=False), path)
        except (OSError, ValueError) as e:
            raise ValueError(f"coil maps {path}: {str(e).splitlines()[0]}") from None
        got = f"shape {maps.shape}"
    elif h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            from .ismrmrd import ismrmrd_dataset_name

            transpose = False
            if not dsname:
                g = ismrmrd_dataset_name(f)
                if g is not None and "csm" in f[g]:
                    dsname, transpose = f"{g}/csm", True
                else:
                    dsname = next((n for n in MAPS_DATASETS if n in f), "")
            if not dsname or dsname not in f or not isinstance(f[dsname], h5py.Dataset):
                raise ValueError(f"coil maps {path}: no dataset {dsname!r}" if dsname else
                                 f"coil maps {path}: none of the datasets {', '.join(MAPS_DATASETS)}; "
                                 "name one as FILE.h5:NAME")
            maps = _complex_array(f[dsname][()], f"{path}:{dsname}")
        if transpose:
            maps = np.swapaxes(maps, -1, -2)
        got = f"dataset {dsname} of shape {maps.shape}"
    else:
        raise ValueError(f"coil maps {path}: not a BART .cfl/.hdr pair, .npy or HDF5 file")
    if maps.ndim == 3:
        maps = maps[None]
    while maps.ndim > 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 4 or tuple(maps.shape[1:]) != (C, H, W):
        hint = ""
        if maps.ndim == 4 and maps.shape[1] == C and maps.shape[-1] == W and maps.shape[-2] > H:
            hint = " (the maps keep the readout oversampling; the k-space has it removed)"
        raise ValueError(f"coil maps {spec}: {got}, {want}{hint}")
    if maps.shape[0] not in (1, int(n_slices)):
        raise ValueError(f"coil maps {spec}: {maps.shape[0]} sets for {n_slices} slices; give one set or one per slice")
    if not np.isfinite(maps).all():
        raise ValueError(f"coil maps {spec}: contain NaN or Inf")
    if not np.abs(maps).reshape(maps.shape[0], -1).max(1).all():
        raise ValueError(f"coil maps {spec}: a set of maps is all zero")
    return np.ascontiguousarray(maps, dtype=np.complex64)


def maps_tensor(maps: np.ndarray, i: int, whitening: np.ndarray | None = None) -> torch.Tensor:
    """Slice ``i``'s maps ``(C, H, W)`` of :func:`read_coil_maps`, whitened like the data (``L^{-1} S``)."""
    m = maps[i if maps.shape[0] > 1 else 0]
    if whitening is not None:
        m = np.einsum("dc,chw->dhw", whitening, m)
    return torch.from_numpy(np.ascontiguousarray(m, dtype=np.complex64))
