"""Smooth operators with exact answers, for the operator tests."""

from __future__ import annotations

import math

import pytest
import torch


def antiderivative_batch(batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """u(x) = sum_k a_k cos(2 pi k x) + b_k sin(2 pi k x) on [0, 1]; v(x) = int_0^x u exactly."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    u = torch.zeros(batch, n, dtype=torch.float64)
    v = torch.zeros(batch, n, dtype=torch.float64)
    for k in range(1, 4):
        a, b = torch.randn(2, batch, 1, generator=g, dtype=torch.float64)
        w = 2 * math.pi * k
        u += a * torch.cos(w * x) + b * torch.sin(w * x)
        v += a * torch.sin(w * x) / w + b * (1 - torch.cos(w * x)) / w
    c = torch.randn(batch, 1, generator=g, dtype=torch.float64)
    u, v = u + c, v + c * x
    return u[:, None].float(), v[:, None].float()


def inverse_laplacian_batch(batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """-Lap v = f on the periodic unit square, f a zero-mean trigonometric series: v exact."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(n, dtype=torch.float64) / n
    f = torch.zeros(batch, n, n, dtype=torch.float64)
    v = torch.zeros(batch, n, n, dtype=torch.float64)
    for k in range(0, 2):
        for m in range(-1, 2):
            if k == 0 and m <= 0:
                continue
            a, b = torch.randn(2, batch, 1, 1, generator=g, dtype=torch.float64)
            phase = 2 * math.pi * (k * x[:, None] + m * x[None, :])
            mode = a * torch.cos(phase) + b * torch.sin(phase)
            f += mode
            v += mode / (4 * math.pi**2 * (k * k + m * m))
    scale = v.std()  # outputs of order one make the step size problem independent
    return f[:, None].float(), (v / scale)[:, None].float()


def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = (pred - target).flatten(1).norm(dim=1)
    return (diff / target.flatten(1).norm(dim=1)).mean()


def overfit(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    max_steps: int,
    lr: float,
    tol: float = 1e-2,
    check_every: int = 25,
) -> tuple[float, int]:
    """Adam on relative L2 (cosine schedule over ``max_steps``) until the eval-mode error
    is below ``tol``; returns (error reached, steps taken)."""
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max_steps)
    error = float("inf")
    for step in range(1, max_steps + 1):
        model.train()
        optimiser.zero_grad()
        relative_l2(model(x), y).backward()
        optimiser.step()
        schedule.step()
        if step % check_every == 0 or step == max_steps:
            model.eval()
            with torch.no_grad():
                error = float(relative_l2(model(x), y))
            if error < tol:
                return error, step
    return error, max_steps


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
