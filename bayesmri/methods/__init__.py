"""Reconstruction and posterior-sampling methods by name: the registry, one module per family and the
helpers that run and score them.

- :mod:`~bayesmri.methods.registry`: :func:`register_method`, :func:`available_methods`, :func:`method_info`
  (a method = prior, sampler, coil-map source and options with ONE set of validated defaults, plus named
  presets such as the demo's);
- families: :mod:`~bayesmri.methods.classical` (``zf``, ``sense``, ``tv``, ``l1wav``),
  :mod:`~bayesmri.methods.diffusion` (``pula``, ``ula-annealed``, ``score-mri``),
  :mod:`~bayesmri.methods.pogmdm` (``pogmdm-joint``), :mod:`~bayesmri.methods.cnf` (``cnf``),
  :mod:`~bayesmri.methods.cinn` (``cinn``);
- :mod:`~bayesmri.methods.maps`: the coil-map sources (``espirit``, ``true``, ``joint``, a file) and
  :func:`prepare`;
- :mod:`~bayesmri.methods.run`: :func:`run_method` over slices, :func:`evaluate`, :func:`schema_row`,
  :func:`calibration_numbers`, :func:`reference_image`.
- :mod:`~bayesmri.methods.reconstruct`: ``recon`` end to end (one file, or one slice of a dataset run);
  :mod:`~bayesmri.methods.outputs`: the files and ``metrics.json`` entry it writes;
  :mod:`~bayesmri.methods.memory`: the chains' memory against the machine's (``--chunk``).

Every method returns a :class:`~bayesmri.samplers.SamplerResult` with ``samples (P, H, W)`` for one slice;
the sampling methods build it with :meth:`SamplerResult.from_samples` (the one posterior std).
"""
from ..samplers.base import SamplerResult
from .classical import DEFAULT_ITERS, DEFAULT_LAMBDAS
from .maps import check_maps, prepare
from .registry import (METHOD_MODULES, MethodInfo, available_methods, get_method, method_info, preset_options,
                       register_method)
from .run import (calibration_numbers, center_crop, evaluate, evaluate_per_slice, n_samples_of, reference_image,
                  run_method, schema_row)

__all__ = ["MethodInfo", "SamplerResult", "register_method", "get_method", "method_info", "available_methods",
           "preset_options", "METHOD_MODULES", "DEFAULT_LAMBDAS", "DEFAULT_ITERS", "prepare", "check_maps",
           "run_method", "evaluate", "evaluate_per_slice", "calibration_numbers", "reference_image", "n_samples_of",
           "schema_row", "center_crop"]
