"""Training: one :class:`Trainer` for every model; each model adds a loss and a batch source.

Plug-ins (one module per model) live beside this file: :mod:`bayesmri.train.score` (VE-SDE score UNet).
A plug-in module that the CLI ``bayesmri train <name>`` should find defines
``cli_add_arguments(parser)`` and ``cli_run(args, cfg: TrainConfig) -> int`` (see :mod:`bayesmri.commands.train`).
"""
from .distributed import DistInfo, dist_info, init_distributed
from .trainer import TrainConfig, Trainer, TrainResult, atomic_torch_save, load_checkpoint, step_generator

__all__ = [
    "Trainer",
    "TrainConfig",
    "TrainResult",
    "atomic_torch_save",
    "load_checkpoint",
    "step_generator",
    "DistInfo",
    "dist_info",
    "init_distributed",
]
