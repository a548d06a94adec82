"""``bayesmri info``: version, torch and devices, external tools."""
from __future__ import annotations

import platform


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    import torch

    from .. import __version__
    from ..bart import bart_available

    print(f"bayesmri {__version__} (python {platform.python_version()})")
    print(f"torch {torch.__version__}; cuda available: {torch.cuda.is_available()}")
    print(f"bart binary: {'found' if bart_available() else 'not found'}")
    return 0
