"""BART interoperability: ``.cfl``/``.hdr`` files and a thin wrapper around the ``bart`` binary.

BART stores complex64 arrays column-major (Fortran order) with the dimensions listed in a text header;
its first dimensions are READ, PHS1, PHS2, COIL, MAPS, ... . :func:`readcfl` and :func:`writecfl`
convert between those files and numpy arrays with the same index order as BART (``a[read, phs1, ...]``).
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .io import atomic_path, atomic_write

__all__ = ["readcfl", "writecfl", "bart_available", "bart", "BartError", "stack_to_bart", "SLICE_DIM", "AVG_DIM"]

#: BART's SLICE and AVG dimensions (``misc/mri.h``): slices of a stack, and posterior samples.
SLICE_DIM, AVG_DIM = 13, 14


class BartError(RuntimeError):
    """The ``bart`` binary is missing or a command failed."""


def _base(name) -> str:
    name = str(name)
    for ext in (".cfl", ".hdr"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def readcfl(name) -> np.ndarray:
    """Read ``name.cfl``/``name.hdr`` into a complex64 array (BART dimension order, trailing 1s dropped)."""
    base = _base(name)
    hdr = Path(base + ".hdr")
    if not hdr.exists():
        raise FileNotFoundError(f"{hdr}: BART header not found")
    try:
        text = hdr.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{hdr}: header is not text") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{hdr}: header has no dimension line")
    words = lines[0].split()
    if not words or not all(w.isascii() and w.isdigit() for w in words):
        raise ValueError(f"{hdr}: dimension line must be non-negative integers, got {lines[0][:60]!r}")
    dims = [int(w) for w in words]
    n = math.prod(dims)  # exact: a header of huge dims must not overflow into a small count
    cfl = Path(base + ".cfl")
    if not cfl.is_file():
        raise FileNotFoundError(f"{cfl}: BART data file not found")
    size = cfl.stat().st_size
    if size != 8 * n:  # checked before reading, so a lying header never allocates
        raise ValueError(f"{cfl}: expected {n} complex values for dims {dims}, found {size / 8:g}")
    data = np.fromfile(cfl, dtype=np.complex64)
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return data.reshape(dims, order="F")


def writecfl(name, array) -> None:
    """Write ``array`` to ``name.cfl``/``name.hdr`` (complex64, column-major), atomically."""
    base = _base(name)
    a = np.asarray(array, dtype=np.complex64)
    dims = list(a.shape) + [1] * max(0, 16 - a.ndim)
    # Data first, header last: a reader that finds the new header also finds complete data.
    with atomic_path(base + ".cfl") as tmp:
        a.ravel(order="F").tofile(tmp)
    atomic_write(base + ".hdr", "# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")


def stack_to_bart(x, extra_dims=None, samples: bool = False) -> np.ndarray:
    """An image stack in BART dimension order, for :func:`writecfl`.

    ``x``: ``(S, H, W)`` (``samples=False``) or ``(P, S, H, W)`` (``samples=True``). H -> READ (0), W -> PHS1
    (1). The ``S`` slices go back to the dims 5..15 they came from when ``extra_dims`` (those dims of a BART
    input, :func:`bayesmri.data.inputs.read_cfl_kspace`) holds exactly ``S`` images, else to SLICE (13);
    samples go to AVG (14), so that ``bart avg 16384`` is their mean (where the input used AVG itself the
    slices are flattened into SLICE).
    """
    a = np.asarray(x)
    a = a if samples else a[None]
    P, S, H, W = a.shape
    dims = [H, W] + [1] * 14
    extra = list(extra_dims) if extra_dims is not None else None
    if extra is not None and len(extra) == 11 and math.prod(extra) == S and not (P > 1 and extra[AVG_DIM - 5] > 1):
        dims[5:] = extra
    else:
        dims[SLICE_DIM] = S
    if samples:
        dims[AVG_DIM] = P
    # (P, S, H, W) -> (H, W, S, P), then S and P unfold into their dims (first index fastest)
    return np.transpose(a, (2, 3, 1, 0)).reshape(dims, order="F")


def bart_available() -> bool:
    """True if a ``bart`` executable is on ``PATH``."""
    return shutil.which("bart") is not None


def bart(command: str, *inputs: np.ndarray, n_outputs: int = 1, timeout: float | None = 600):
    """Run ``bart <command> in_0 ... out_0 ...`` on numpy arrays and return the outputs.

    Parameters
    ----------
    command : str
        BART tool and options, e.g. ``"ecalib -m1 -r 24"``.
    *inputs : ndarray
        Input arrays in BART dimension order.
    n_outputs : int
        Number of output files the tool writes.

    Returns
    -------
    ndarray or tuple of ndarray
    """
    exe = shutil.which("bart")
    if exe is None:
        raise BartError("the 'bart' binary is not installed (Debian: apt-get install bart)")
    with tempfile.TemporaryDirectory(prefix="bayesmri_bart_") as tmp:
        in_names = []
        for i, a in enumerate(inputs):
            p = os.path.join(tmp, f"in{i}")
            writecfl(p, a)
            in_names.append(p)
        out_names = [os.path.join(tmp, f"out{i}") for i in range(n_outputs)]
        args = [exe, *command.split(), *in_names, *out_names]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        if proc.returncode != 0:
            raise BartError(f"bart {command} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        outs = tuple(readcfl(p) for p in out_names)
    return outs[0] if n_outputs == 1 else outs
