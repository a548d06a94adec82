"""How much memory a sampler's chains need, against what the machine has (``recon --chunk``)."""
from __future__ import annotations

import warnings

__all__ = ["CHAIN_BYTES_FACTOR", "available_memory", "check_chain_memory"]

#: Bytes a sampler holds per chain, in units of one coil k-space ``C*H*W`` complex64: measured for pULA
#: at 320x320 with 16 coils (issue 22: ~0.35 GB per sample = 27 x 13.1 MB).
CHAIN_BYTES_FACTOR = 27


def available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_chain_memory(P: int, chunk: int | None, C: int, H: int, W: int) -> None:
    """Warn when ``min(P, chunk)`` chains of ``C`` coils at ``H x W`` need more than the memory available now
    (:data:`CHAIN_BYTES_FACTOR`); ``ValueError`` when they need more than twice the machine's memory. Both
    name the ``--chunk`` that fits."""
    # An estimate, so a warning when it exceeds the memory available now (other programs may free
    # some); an error only when it exceeds twice the machine's whole memory, which no run survives.
    from ..data.fastmri import max_slice_bytes

    per_chain = CHAIN_BYTES_FACTOR * C * H * W * 8
    at_once = min(P, chunk or P)
    need = at_once * per_chain
    phys = 4 * max_slice_bytes()  # the physical memory (or BAYESMRI_MAX_SLICE_BYTES x 4)
    avail = available_memory()
    limit = avail if avail is not None else phys
    fit = max(1, int(limit // per_chain))
    what = f"{at_once} chains at once need about {need / 2**30:.1f} GiB ({C} coils, {H}x{W})"
    if need > 2 * phys:
        raise ValueError(f"{what}, more than twice this machine's {phys / 2**30:.1f} GiB: use --chunk {fit}")
    if avail is not None and need > avail:
        warnings.warn(f"{what}; {avail / 2**30:.1f} GiB available: use --chunk {fit}", stacklevel=3)


