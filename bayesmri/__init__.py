"""bayesmri: posterior sampling for accelerated MRI reconstruction."""
__version__ = "0.1.0"

# Before torch allocates anything: keep freed large blocks for reuse (glibc), which removes the page-fault
# system time that was a third of a 320x320 sampler's CPU time; BAYESMRI_MALLOC=system opts out
# (bayesmri/_malloc.py, docs/speed.md).
from ._malloc import retain_freed_memory as _retain_freed_memory

_retain_freed_memory()
