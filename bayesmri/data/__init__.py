"""Data: the built-in brain slices, the acquisition simulator, the fastMRI reader and the typed sample.

- :mod:`bayesmri.data.builtin`: ``load_slices(split, size, contrast)``, ``list_splits()``, ``slice_info``.
"""
from .builtin import SPLITS, list_splits, load_slices, num_slices, slice_info, SliceInfo, resize_magnitude

__all__ = ["SPLITS", "list_splits", "load_slices", "num_slices", "slice_info", "SliceInfo", "resize_magnitude"]
