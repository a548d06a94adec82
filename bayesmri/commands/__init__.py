"""Subcommands of the ``bayesmri`` CLI: each module has ``add_arguments(parser)`` and ``run(args)``."""
