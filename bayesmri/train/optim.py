"""Projected AdaBelief (Zhuang et al., NeurIPS 2020), as used to train PoGMDM (Zach et al.; Nagler sec. 3.2).

AdaBelief is Adam with the second moment of the *surprise* ``g - m`` instead of ``g``::

    m <- b1 m + (1 - b1) g
    s <- b2 s + (1 - b2) (g - m)^2 + eps
    theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)

followed here by a user-supplied projection onto the constraint set (``project()``, called without
gradient after every step). The PyPI package ``adabelief-pytorch`` is unmaintained since 2021, hence this
short implementation.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["ProjectedAdaBelief"]


class ProjectedAdaBelief(torch.optim.Optimizer):
    """AdaBelief followed by a projection.

    Parameters
    ----------
    params : iterable of tensors or parameter groups
    lr : float
    betas : (float, float)
    eps : float
    project : callable, optional
        Called with no arguments after every step (e.g. ``PoGMDM.project``).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-12,
                 project: Callable[[], None] | None = None):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))
        self.project = project

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["m"] = torch.zeros_like(p)
                    st["s"] = torch.zeros_like(p)
                st["step"] += 1
                t = float(st["step"])
                m, s = st["m"], st["s"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                d = g - m
                s.mul_(b2).addcmul_(d, d, value=1 - b2).add_(group["eps"])
                denom = (s / (1 - b2**t)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1**t))
        if self.project is not None:
            self.project()
        return loss
