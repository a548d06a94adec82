"""One trainer for every model in bayesmri (GUIDE section 8).

A model contributes only

* a **loss function** ``loss_fn(model, batch, generator) -> (loss, logs)``: ``loss`` a scalar tensor,
  ``logs`` a dict of extra floats for the CSV (return the same keys every step; NaN where undefined);
  it must call ``model(...)`` (the forward), so that DistributedDataParallel can synchronise gradients,
  and draw all its randomness from ``generator``;
* a **batch source**: a map-style ``torch.utils.data.Dataset`` (shuffled per epoch by a seeded
  ``DistributedSampler``; items collated with ``default_collate``) or a callable
  ``batch_fn(batch_size, generator) -> batch`` for synthetic data.

The trainer does the rest: AdamW (or a given optimiser) with linear warm-up, gradient clipping, an
exponential moving average (EMA) of the weights, mixed precision on CUDA, atomic checkpoints every N
steps and on interruption (SIGINT/SIGTERM), exact resume, a CSV log beside the checkpoint, a tqdm
progress bar, DDP under ``torchrun`` and the final export of the EMA weights as safetensors + JSON.

Exact resume
------------
Every random draw is reproducible from the checkpoint: the per-step generator handed to ``loss_fn`` (and
to ``batch_fn``) is seeded from ``(seed, step, rank)``, the data order from ``(seed, epoch)`` plus the
position inside the epoch, and the global torch / numpy / python RNG states (used e.g. by dropout) of
every rank are saved and restored. Training ``k`` steps, stopping and resuming to ``n`` gives the same
weights, bit for bit, as training ``n`` steps straight (on the same device and world size).
"""
from __future__ import annotations

import csv
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler
from torch.utils.data import default_collate

from .._interrupt import Interrupted
from ..io import atomic_path, remove_stale_temporaries
from .distributed import DistInfo, dist_info


__all__ = ["TrainConfig", "Trainer", "TrainResult", "atomic_torch_save", "load_checkpoint", "step_generator"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
EXPORT_STEM = "model_ema"
_FORMAT = "bayesmri-train-checkpoint-v1"


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model.

    Defaults follow Chung & Ye sec. 4 (Adam, linear warm-up, clip 1.0, EMA 0.999); the warm-up is
    shorter than their 5000 steps because our runs are short.
    """

    steps: int = 1000
    batch_size: int = 8  # per process
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 500
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1+n)/(10+n)): short runs are not dominated by the init
    checkpoint_every: int = 500
    seed: int = 0
    amp: str = "auto"  # auto | bf16 | fp16 | off (autocast only ever on CUDA)
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be one of auto, bf16, fp16, off; got {self.amp!r}")
        self.betas = tuple(float(b) for b in self.betas)


@dataclass
class TrainResult:
    step: int
    last_loss: float
    steps_per_second: float
    checkpoint: Path | None
    export: Path | None
    log: Path | None
    interrupted: bool = False
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- helpers
def step_generator(seed: int, step: int, rank: int, stream: int = 0, device="cpu") -> torch.Generator:
    """A generator seeded from ``(seed, step, rank, stream)`` with good mixing (numpy SeedSequence)."""
    s = int(np.random.SeedSequence([int(seed), int(step), int(rank), int(stream)]).generate_state(1, np.uint64)[0])
    g = torch.Generator(device=device)
    g.manual_seed(s & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``.

    A reader never sees a half-written file: either the old file or the complete new one.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a trainer checkpoint with ``torch.load(weights_only=True)`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, TypeError) as exc:
        # torch reports a truncated zip as a RuntimeError of several sentences ("internal miniz error")
        first = (str(exc).split(". ")[0] or type(exc).__name__).strip()
        raise ValueError(f"{path}: truncated or corrupt checkpoint ({first}); "
                         "delete it to start again, or restore a copy") from None
    except Exception as exc:  # e.g. pickle.UnpicklingError from a file that is not a torch checkpoint
        raise ValueError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a bayesmri training checkpoint")
    return ckpt


def _valid_rows(rows, fieldnames, max_step: int) -> list[dict]:
    """Rows of a log to keep on resume: complete, steps strictly increasing, none beyond ``max_step``.

    A kill -9 can leave a torn last line ("15" of "153,0.2,..."), which used to parse as step 15 and
    appear twice; rows past the checkpoint are recomputed by the resumed run.
    """
    kept, last = [], 0
    for row in rows:
        if None in row or any(row.get(k) is None for k in fieldnames):  # too many / too few fields
            continue
        try:
            step = int(row["step"])
        except (TypeError, ValueError, KeyError):
            continue
        if last < step <= max_step:
            kept.append(row)
            last = step
    return kept


def _config_conflicts(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys present in both (nested) configs with different values, as ``'key: old -> new'``."""
    out = []
    for k in sorted(set(old) & set(new), key=str):
        a, b = old[k], new[k]
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_conflicts(a, b, f"{prefix}{k}.")
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _rng_state() -> dict:
    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Train ``model`` by minimising ``loss_fn`` over batches from ``data``.

    Parameters
    ----------
    model : nn.Module
        Should expose ``model_type`` (str) and ``config`` (constructor kwargs, JSON-able) for the export,
        or pass ``model_config={"model_type": ..., "config": {...}}``.
    loss_fn : callable
        ``loss_fn(model, batch, generator) -> (scalar loss, dict of floats)``.
    data : Dataset or callable
        Map-style dataset, or ``batch_fn(batch_size, generator) -> batch``.
    out_dir : path
        Holds ``checkpoint.pt``, ``log.csv`` and the export ``model_ema.safetensors`` / ``.json``.
    config : TrainConfig, optional
        Settings; keyword arguments override single fields (``Trainer(..., steps=100)``).
    optimizer : torch.optim.Optimizer, optional
        Built on ``model.parameters()`` after ``model`` was moved to the device; default AdamW.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` if present. Without it an existing checkpoint is an error.
    export_metadata : dict, optional
        Extra JSON fields for the export (e.g. the prior's ``sigma_min``/``sigma_max``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        data,
        out_dir,
        config: TrainConfig | None = None,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        resume: bool = False,
        model_config: dict | None = None,
        export_metadata: dict | None = None,
        collate_fn: Callable = default_collate,
        **overrides,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable: loss_fn(model, batch, generator) -> (loss, logs)")
        cfg = TrainConfig() if config is None else config
        if overrides:
            known = {f.name for f in fields(TrainConfig)}
            bad = set(overrides) - known
            if bad:
                raise TypeError(f"unknown Trainer options {sorted(bad)}; TrainConfig fields are {sorted(known)}")
            cfg = TrainConfig(**{**asdict(cfg), **overrides})
        self.cfg = cfg
        self.dist: DistInfo = dist_info()
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)

        if isinstance(data, Dataset) and hasattr(data, "__len__"):
            self.dataset, self.batch_fn = data, None
            self.sampler = DistributedSampler(
                data, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=cfg.seed
            )
            if len(self.sampler) < cfg.batch_size:
                raise ValueError(
                    f"dataset of {len(data)} items gives {len(self.sampler)} per process, fewer than "
                    f"batch_size={cfg.batch_size}"
                )
        elif callable(data):
            self.dataset, self.batch_fn, self.sampler = None, data, None
        else:
            raise TypeError(
                "data must be a map-style torch Dataset (with __len__) or a callable batch_fn(batch_size, "
                f"generator); got {type(data).__name__} (plain iterators cannot be resumed exactly)"
            )
        self.collate_fn = collate_fn
        self.loss_fn = loss_fn

        self.model = model.to(self.device)
        if model_config is None:
            if not hasattr(model, "model_type") or not hasattr(model, "config"):
                raise ValueError("model has no model_type/config attributes; pass model_config=")
            model_config = {"model_type": model.model_type, "config": dict(model.config)}
        self.model_config = model_config
        self.export_metadata = dict(export_metadata or {})
        self.ddp_model = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        self.optimizer = optimizer or torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        warm = max(int(cfg.warmup_steps), 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 1.0 if warm == 0 else min(1.0, (s + 1) / warm)
        )
        self.amp_dtype = None
        if self.device.type == "cuda" and cfg.amp != "off":
            if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
                self.amp_dtype = torch.float16
            else:
                self.amp_dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = {
            k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
            for k, v in self.model.state_dict().items()
        }

        self.out_dir = Path(out_dir)
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        self.log_path = self.out_dir / LOG_NAME
        self.step = 0
        self._resumed_step = 0  # step of the checkpoint resumed from (log rows beyond it are dropped)
        self.epoch = 0
        self.batch_in_epoch = 0
        self._epoch_indices: list[int] | None = None
        self._stop = False
        self._in_update = False
        self._csv_file = None
        self._csv_writer = None
        self._csv_fields: list[str] | None = None

        if self.dist.is_main:
            # What a SIGKILL during a checkpoint or log write leaves (.checkpoint.pt.<pid>-xxxx.tmp.pt):
            # temporaries of processes that no longer exist.
            for name in (CHECKPOINT_NAME, LOG_NAME, EXPORT_STEM + ".safetensors", EXPORT_STEM + ".json"):
                remove_stale_temporaries(self.out_dir, name)
        if self.ckpt_path.exists():
            if not resume:
                raise ValueError(
                    f"{self.ckpt_path} exists: pass resume=True (CLI --resume) to continue, or use another out dir"
                )
            self._load(self.ckpt_path)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed for exact resume (tensors and plain containers: loads with weights_only)."""
        rng = _rng_state()
        if self.dist.enabled:
            all_rng = [None] * self.dist.world_size
            dist.all_gather_object(all_rng, rng)
        else:
            all_rng = [rng]
        return {
            "format": _FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.dist.world_size,
            "batch_size": self.cfg.batch_size,
            "model": self.model.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": all_rng,
            "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()},
            "model_config": self.model_config,
        }

    def _load(self, path):
        ckpt = load_checkpoint(path, map_location=self.device)
        old_mc = ckpt.get("model_config")
        if isinstance(old_mc, dict):
            # Another architecture (e.g. resuming with another --config) would fail deep inside
            # load_state_dict, or worse load into a model that means something else: refuse by name.
            # Keys on one side only (a constructor argument added since) are not conflicts.
            bad = _config_conflicts(old_mc, self.model_config)
            if bad:
                raise ValueError(f"{path} was written for another model ({'; '.join(bad[:4])}"
                                 f"{'; ...' if len(bad) > 4 else ''}): resume with the same settings, "
                                 "or train into another --out")
        if ckpt["world_size"] != self.dist.world_size or ckpt["batch_size"] != self.cfg.batch_size:
            warnings.warn(
                f"resuming with world_size={self.dist.world_size}, batch_size={self.cfg.batch_size} from a run "
                f"with {ckpt['world_size']}, {ckpt['batch_size']}: training continues but not bit-exactly",
                stacklevel=3,
            )
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise ValueError(f"{path}: its weights do not fit this model ({str(exc).splitlines()[0]})") from None
        for k, v in ckpt["ema"].items():
            self.ema[k].copy_(v)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        old_lr = ckpt.get("train_config", {}).get("lr")
        if old_lr is not None and float(old_lr) != float(self.cfg.lr):
            # A new --lr on resume (e.g. a low-LR finishing phase) replaces the restored one; the
            # optimizer's moments are kept.
            warnings.warn(f"resuming with lr={self.cfg.lr} (checkpoint: {old_lr})", stacklevel=3)
            self.scheduler.base_lrs = [float(self.cfg.lr)] * len(self.optimizer.param_groups)
            for grp in self.optimizer.param_groups:
                grp["lr"] = float(self.cfg.lr) * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scaler.load_state_dict(ckpt["scaler"])
        rngs = ckpt["rng"]
        _set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self.step = int(ckpt["step"])
        self._resumed_step = self.step
        self.epoch = int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint.pt`` atomically (rank 0); all ranks must call it under DDP."""
        state = self.state_dict()
        if self.dist.is_main:
            if self._csv_file is not None:
                # The log first: a checkpoint at step n must never exist without the rows up to n
                # (a kill between the two used to lose the unflushed rows for good).
                self._csv_file.flush()
                os.fsync(self._csv_file.fileno())
            atomic_torch_save(state, self.ckpt_path)
            return self.ckpt_path
        return None

    # ------------------------------------------------------------------ data
    def _next_batch(self):
        cfg = self.cfg
        if self.batch_fn is not None:
            g = step_generator(cfg.seed, self.step, self.dist.rank, stream=1)
            return self.batch_fn(cfg.batch_size, g)
        if self._epoch_indices is None:
            self.sampler.set_epoch(self.epoch)
            self._epoch_indices = list(self.sampler)
        n_batches = len(self._epoch_indices) // cfg.batch_size  # drop the last partial batch
        if self.batch_in_epoch >= n_batches:
            self.epoch += 1
            self.batch_in_epoch = 0
            self.sampler.set_epoch(self.epoch)
            self._epoch_indices = list(self.sampler)
        b = self.batch_in_epoch
        idx = self._epoch_indices[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        self.batch_in_epoch += 1
        return self.collate_fn([self.dataset[i] for i in idx])

    # ------------------------------------------------------------------ logging
    def _open_log(self, logs: dict):
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        base = ["step", "loss", "lr", "grad_norm", "time_s"]
        kept: list[dict] = []
        fields_ = None
        if self.log_path.exists() and self._resumed_step > 0:
            # Resume: keep the rows up to the checkpointed step, drop any written after it.
            with open(self.log_path, newline="") as f:
                r = csv.DictReader(f)
                fields_ = r.fieldnames
                # the checkpoint's step, not self.step: the log is opened after the first resumed
                # step, and that step's row from the killed run would stay as a duplicate
                kept = _valid_rows(r, fields_ or [], self._resumed_step)
        if not fields_:
            fields_ = base + [k for k in logs if k not in base]
        with atomic_path(self.log_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields_)
            w.writeheader()
            w.writerows(kept)
        self._csv_fields = list(fields_)
        self._csv_file = open(self.log_path, "a", newline="")
        self._csv_writer = csv.DictWriter(self._csv_file, fieldnames=self._csv_fields, extrasaction="ignore", restval="")

    def _close_log(self):
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None
            self._csv_writer = None

    # ------------------------------------------------------------------ one step
    def _ema_update(self):
        n = self.step  # number of updates done so far (after increment)
        decay = self.cfg.ema_decay
        if self.cfg.ema_warmup:
            decay = min(decay, (1.0 + n) / (10.0 + n))
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                e = self.ema[k]
                if e.is_floating_point():
                    e.lerp_(v.detach().float(), 1.0 - decay)
                else:
                    e.copy_(v)

    def train_step(self) -> tuple[float, dict, float]:
        """One optimisation step; returns (loss, logs, grad norm) of this process."""
        batch = _to_device(self._next_batch(), self.device)
        gen = step_generator(self.cfg.seed, self.step, self.dist.rank, stream=0, device=self.device)
        self.ddp_model.train()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss, logs = self.loss_fn(self.ddp_model, batch, gen)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError("loss_fn must return a scalar tensor as its first output")
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {self.step}; last checkpoint kept")
        self._in_update = True
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.grad_clip is not None:
            gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            gnorm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self._ema_update()
        self._in_update = False
        return float(loss.detach()), {k: float(v) for k, v in (logs or {}).items()}, float(gnorm)

    # ------------------------------------------------------------------ loop
    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}

        def handler(signum, frame):
            self._signum = signum  # exit status 128 + signal (130 SIGINT, 143 SIGTERM) under the CLI
            if self._stop:  # second signal: give up at once
                raise Interrupted(signum)
            self._stop = True

        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
        return old

    def fit(self, export: bool = True) -> TrainResult:
        """Train to ``cfg.steps`` (checkpoint every ``checkpoint_every`` and at the end), then export.

        SIGINT / SIGTERM finish the current step, write a checkpoint and raise ``KeyboardInterrupt``.
        """
        cfg = self.cfg
        old_handlers = self._install_signals()
        pbar = None
        t0, step0 = time.perf_counter(), self.step
        last_loss = float("nan")
        interrupted = False
        try:
            if self.dist.is_main and cfg.progress:
                from tqdm.auto import tqdm

                pbar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True)
            while self.step < cfg.steps:
                loss, logs, gnorm = self.train_step()
                if self.dist.enabled:
                    # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
                    dev = self.device if dist.get_backend() == "nccl" else "cpu"
                    flag = torch.tensor([loss, float(self._stop)], dtype=torch.float64, device=dev)
                    dist.all_reduce(flag)  # mean loss for the log; any rank's stop request stops all
                    loss = float(flag[0]) / self.dist.world_size
                    self._stop = bool(flag[1] > 0)
                last_loss = loss
                if self.dist.is_main:
                    if self._csv_writer is None:
                        self._open_log(logs)
                    row = {"step": self.step, "loss": f"{loss:.6g}", "lr": f"{self.scheduler.get_last_lr()[0]:.6g}",
                           "grad_norm": f"{gnorm:.6g}", "time_s": f"{time.perf_counter() - t0:.3f}"}
                    row.update({k: f"{v:.6g}" for k, v in logs.items()})
                    self._csv_writer.writerow(row)
                    if self.step % 10 == 0:
                        self._csv_file.flush()  # let others follow the run
                    if pbar is not None:
                        pbar.update(1)
                        if self.step % 10 == 0 or self.step == cfg.steps:
                            pbar.set_postfix(loss=f"{loss:.4g}")
                if self._stop:
                    interrupted = True
                    break
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            # Raised outside our handler (e.g. a second Ctrl-C): save only a consistent state.
            interrupted = True
            if self._in_update:
                self._close_log()
                raise
        finally:
            if pbar is not None:
                pbar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        ckpt = self.save_checkpoint()
        self._close_log()
        rate = (self.step - step0) / max(time.perf_counter() - t0, 1e-9)
        if interrupted:
            raise Interrupted(getattr(self, "_signum", None) or signal.SIGINT,
                              f"training interrupted at step {self.step}; checkpoint {self.ckpt_path}")
        out = None
        if export and self.dist.is_main:
            out = self.export(self.out_dir / EXPORT_STEM)
        return TrainResult(self.step, last_loss, rate, ckpt, out, self.log_path if self.dist.is_main else None)

    # ------------------------------------------------------------------ export
    def export(self, stem, use_ema: bool = True, dtype: torch.dtype | None = None) -> Path:
        """Write ``stem.safetensors`` (EMA weights by default) and ``stem.json`` (config that rebuilds it)."""
        from bayesmri.priors.loading import save_model

        weights = self.ema if use_ema else self.model.state_dict()
        training = {
            "steps": self.step,
            "batch_size_per_process": self.cfg.batch_size,
            "world_size": self.dist.world_size,
            "lr": self.cfg.lr,
            "warmup_steps": self.cfg.warmup_steps,
            "grad_clip": self.cfg.grad_clip,
            "ema_decay": self.cfg.ema_decay,
            "weights": "ema" if use_ema else "raw",
            "seed": self.cfg.seed,
        }
        return save_model(
            weights,
            stem,
            model_type=self.model_config["model_type"],
            config=self.model_config["config"],
            training=training,
            metadata=self.export_metadata,
            dtype=dtype,
            # buffers (e.g. fixed Fourier frequencies) stay float32; only parameters are cast
            keep_float32=set(weights) - {n for n, _ in self.model.named_parameters()},
        )
