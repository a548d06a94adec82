"""Data: the built-in brain slices, the acquisition simulator, the fastMRI reader and the typed sample.

- :mod:`bayesmri.data.builtin`: ``load_slices(split, size=128, contrast=None)``, ``list_splits()``,
  ``slice_info(split)``, ``num_slices``.
- :mod:`bayesmri.data.simulate`: ``simulate_acquisition(magnitude, mask=|trajectory=, ncoils, snr_db, seed)``,
  ``SimulatedBrainDataset(split, size, pattern, acceleration, ncoils, snr_db, seed)``.
- :mod:`bayesmri.data.sample`: ``MRISample`` (``.operator(maps="espirit"|"true")``, ``.maps_espirit``
  lazily computed, ``.scale``, ``.unscale``), ``collate_samples``.
- :mod:`bayesmri.data.fastmri`: ``FastMRIDataset``, ``read_fastmri_h5``, ``preprocess_multicoil``,
  ``write_fastmri_h5``.
"""
from .builtin import SPLITS, SliceInfo, list_splits, load_slices, num_slices, resize_magnitude, slice_info
from .sample import MRISample, collate_samples, zero_filled_magnitude
from .simulate import SimulatedBrainDataset, derive_seed, noise_sigma_for_snr, simulate_acquisition, simulation_maps

__all__ = [
    "SPLITS", "SliceInfo", "list_splits", "load_slices", "num_slices", "resize_magnitude", "slice_info",
    "MRISample", "collate_samples", "zero_filled_magnitude",
    "SimulatedBrainDataset", "derive_seed", "noise_sigma_for_snr", "simulate_acquisition", "simulation_maps",
]

from .fastmri import (
    ANATOMY_DEFAULTS,
    FastMRIDataset,
    FastMRIVolume,
    make_ismrmrd_header,
    parse_ismrmrd_header,
    preprocess_multicoil,
    preprocess_singlecoil,
    read_fastmri_h5,
    write_fastmri_h5,
)

__all__ += [
    "ANATOMY_DEFAULTS", "FastMRIDataset", "FastMRIVolume", "make_ismrmrd_header", "parse_ismrmrd_header",
    "preprocess_multicoil", "preprocess_singlecoil", "read_fastmri_h5", "write_fastmri_h5",
]
