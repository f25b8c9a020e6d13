"""Per-channel unit-Gaussian normalisation with statistics stored as buffers.

x_hat_c = (x_c - mean_c) / std_c, with mean and std of channel c over the samples and grid
points of the training split. neuraloperator's ``UnitGaussianNormalizer`` computes the
statistics of one in-memory tensor (its incremental update scales the standard deviation,
not the variance, by n/(n-1)); here they are accumulated in float64 batch by batch
(Chan et al.'s parallel update), so datasets that do not fit in memory normalise exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class ChannelNormalizer(nn.Module):
    """Unit-Gaussian statistics per channel of (B, C, *grid) tensors.

    A channel with zero variance (e.g. a constant parameter) gets std |mean| (1 where it
    is zero), so that it passes through shifted but never divided by zero.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def partial_fit(self, batch: torch.Tensor) -> None:
        """Add a (B, C, *grid) batch to the running statistics; :meth:`finish` applies them."""
        channels = self.mean.numel()
        if batch.ndim < 2 or batch.shape[1] != channels:
            raise ValueError(
                f"normaliser for {channels} channel(s) got a batch of shape {tuple(batch.shape)}"
            )
        if not hasattr(self, "_running"):
            zeros = torch.zeros(channels, dtype=torch.float64)
            self._running = [0, zeros, zeros.clone()]
        count, mean, m2 = self._running
        flat = batch.detach().to("cpu", torch.float64).transpose(0, 1).reshape(channels, -1)
        n_b = flat.shape[1]
        if n_b == 0:
            return
        mean_b = flat.mean(dim=1)
        m2_b = ((flat - mean_b[:, None]) ** 2).sum(dim=1)
        delta = mean_b - mean
        total = count + n_b
        self._running = [
            total,
            mean + delta * (n_b / total),
            m2 + m2_b + delta**2 * (count * n_b / total),
        ]

    @torch.no_grad()
    def finish(self) -> ChannelNormalizer:
        """Store the accumulated mean and standard deviation in the buffers."""
        count, mean, m2 = getattr(self, "_running", (0, None, None))
        if count == 0:
            raise ValueError("cannot fit a normaliser on no data (the training split is empty)")
        del self._running
        std = torch.sqrt(m2 / count)
        # a constant channel (std within rounding of its mean) gets its own size, |mean|,
        # an all-zero one 1: relative to the data, so the same in any units (a floor of
        # 1e-12 in the data's units left outputs stored x 1e-13 undivided)
        std = torch.where(std > 1e-12 * mean.abs(), std,
                          torch.where(mean != 0, mean.abs(), torch.ones_like(std)))
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))
        self.fitted.fill_(True)
        return self

    def fit(self, batches: Iterable[torch.Tensor]) -> ChannelNormalizer:
        """Mean and variance over an iterable of (B, C, *grid) batches."""
        for batch in batches:
            self.partial_fit(batch)
        return self.finish()

    def _shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.ndim - 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        shape = self._shape(x)
        return (x - self.mean.to(x.dtype).view(shape)) / self.std.to(x.dtype).view(shape)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        shape = self._shape(x)
        return x * self.std.to(x.dtype).view(shape) + self.mean.to(x.dtype).view(shape)
