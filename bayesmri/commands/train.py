"""``bayesmri train {score,pogmdm,cnf,cinn} ...``: train a learned prior or conditional flow.

Each model is a plug-in module ``bayesmri.train.<name>`` defining ``cli_add_arguments(parser)`` (its own
options) and ``cli_run(args, cfg) -> int`` (``cfg`` a :class:`bayesmri.train.TrainConfig` built from the
common options below). A model is listed only once its module exists. Multi-GPU / multi-process::

    torchrun --nproc_per_node=4 -m bayesmri.cli train score --config default128 --steps 200000 --out runs/s128
"""
from __future__ import annotations

import argparse
import importlib

# name -> (plug-in module, one-line help)
MODELS = {
    "score": ("bayesmri.train.score", "VE-SDE score UNet (Chung & Ye) by denoising score matching"),
    "pogmdm": ("bayesmri.train.pogmdm", "product of Gaussian-mixture diffusion model (Zach, Nagler, Pock)"),
    "cnf": ("bayesmri.train.cnf", "conditional normalising flow (Wen et al.)"),
    "cinn": ("bayesmri.train.cinn", "conditional invertible network (Denker et al.)"),
}


def _common_arguments(p) -> None:
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv, model_ema.safetensors/.json")
    p.add_argument("--steps", type=int, default=10000, help="total optimisation steps (default 10000)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--batch-size", type=int, default=8, help="batch size per process (default 8)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps (default 500)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (default 1.0; 0 = off)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay (default 0.999)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="mixed precision on CUDA")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export-only", action="store_true",
                   help="do not train: write the EMA weights of OUT/checkpoint.pt (safe while a run is going on)")
    p.add_argument("--export-to", default=None, help="export stem (default OUT/model_ema), e.g. bayesmri/weights/x")
    # also here, so `bayesmri train score ... --debug` works (SUPPRESS keeps an earlier --debug)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error instead of one line")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="model", metavar="MODEL")
    for name, (mod, help_) in MODELS.items():
        module = importlib.import_module(mod)
        p = sub.add_parser(name, help=help_, description=help_)
        _common_arguments(p)
        module.cli_add_arguments(p)
        p.set_defaults(_train_run=module.cli_run)
    parser.set_defaults(_train_parser=parser)


def run(args) -> int:
    import torch

    from bayesmri.train import TrainConfig, init_distributed

    if getattr(args, "_train_run", None) is None:
        args._train_parser.print_help()
        return 2
    import math

    from .. import io
    from .._validate import check_seed, resolve_device

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolve_device(device)  # `--device cuda` on a machine without CUDA: one line, before any work
    check_seed(args.seed)
    if args.grad_clip is not None and not math.isfinite(args.grad_clip):
        raise ValueError(f"--grad-clip must be a finite number (0 = off), got {args.grad_clip}")
    if not math.isfinite(args.ema):
        raise ValueError(f"--ema must be a finite number in [0, 1), got {args.ema}")
    io.check_writable(args.out)  # the first checkpoint must not be the first write to fail
    init_distributed()
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        grad_clip=args.grad_clip if args.grad_clip and args.grad_clip > 0 else None,
        ema_decay=args.ema,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        amp=args.amp,
        device=device,
        progress=not args.no_progress,
    )
    try:
        return int(args._train_run(args, cfg) or 0)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
