"""Latent Spectral Model (LSM).

Wu, Hu, Luo, Wang and Long, "Solving High-Dimensional PDEs with Latent Spectral Models",
ICML 2023. Coordinates are appended to the input and lifted to ``width`` channels; a
U-Net-style hierarchy (max-pool + double convolution down, interpolation + double
convolution up, widths d, 2d, 4d, 8d, 8d for 4 stages) gives features at every scale, and
every skip connection passes through a Neural Spectral Block:

1. patchify the feature map (padding it to a multiple of the patch size);
2. encoder: T learnable latent tokens attend to the pixels of each patch (multi-head
   cross-attention with a residual), z <- z + Attn(z, K x, V x);
3. transition in the latent space with a spectral basis of sin/cos operators,
   z_c <- z_c + sum_k [w_{c,k} sin(k pi z_c / N) + w'_{c,k} cos(k pi z_c / N)], k < N;
4. decoder: pixels attend to the tokens, x <- x + Attn(Q x, z, z); de-patchify and crop.

Attention is the unscaled softmax(q k^T) of the reference code. Unlike the reference,
which zero-pads the lifted field once to a size divisible by 2^stages * patch, each block
pads its own input (replicating edge values) to a patch multiple and crops afterwards, so
any grid size works without choosing a padding by hand.

The head is Linear(d, 128) - GELU - Linear(128, out). No library ships LSM, hence this
implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pdeforge.operators.base import (
    Operator,
    OperatorConfigError,
    OperatorInputError,
    check_coordinates,
    crop,
    layer_for,
    pad_to_multiple,
    records_config,
    unit_grid,
)

NORMS = ("batch", "group", "none")


def _norm(kind: str, channels: int, dim: int) -> nn.Module:
    if kind == "batch":
        return layer_for("BatchNorm", dim)(channels)
    if kind == "group":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class DoubleConv(nn.Module):
    """(3x3 conv -> norm -> ReLU) twice, as in U-Net."""

    def __init__(self, c_in: int, c_out: int, dim: int, norm: str, c_mid: int | None = None):
        super().__init__()
        c_mid = c_mid or c_out
        conv = layer_for("Conv", dim)
        self.block = nn.Sequential(
            conv(c_in, c_mid, 3, padding=1, bias=norm == "none"),
            _norm(norm, c_mid, dim),
            nn.ReLU(),
            conv(c_mid, c_out, 3, padding=1, bias=norm == "none"),
            _norm(norm, c_out, dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class NeuralSpectralBlock(nn.Module):
    """Patchwise latent-token attention with a sin/cos transition (see module docstring)."""

    def __init__(
        self, width: int, num_basis: int, num_tokens: int, heads: int, patch_size: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.width, self.heads, self.patch = width, heads, patch_size
        self.tokens = nn.Parameter(torch.rand(heads, num_tokens, width // heads) / width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.to_q = nn.Linear(width, width)
        self.register_buffer(
            "frequencies",
            torch.arange(num_basis, dtype=torch.float32) / num_basis,
            persistent=False,
        )
        self.basis_weights = nn.Parameter(torch.rand(width, 2 * num_basis) / width)

    def _patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(B, C, *S) with S multiple of the patch -> (B * n_patches, pixels, C)."""
        b, c, *s = x.shape
        counts = [n // p for n, p in zip(s, self.patch, strict=True)]
        view = [b, c]
        for n, p in zip(counts, self.patch, strict=True):
            view += [n, p]
        x = x.reshape(view)
        d = len(s)
        # (B, C, n1, p1, n2, p2) -> (B, n1, n2, p1, p2, C)
        order = [0, *[2 + 2 * i for i in range(d)], *[3 + 2 * i for i in range(d)], 1]
        x = x.permute(order)
        return x.reshape(b * math.prod(counts), math.prod(self.patch), c), tuple(counts)

    def _unpatchify(self, x: torch.Tensor, b: int, counts: tuple[int, ...]) -> torch.Tensor:
        d = len(counts)
        c = x.shape[-1]
        x = x.reshape(b, *counts, *self.patch, c)
        # (B, n1, n2, p1, p2, C) -> (B, C, n1, p1, n2, p2)
        order = [0, 2 * d + 1]
        for i in range(d):
            order += [1 + i, 1 + d + i]
        x = x.permute(order)
        return x.reshape(b, c, *[n * p for n, p in zip(counts, self.patch, strict=True)])

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (N, L, C) -> (N, H, L, C/H)
        n, length, c = t.shape
        return t.reshape(n, length, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        padded, sizes = pad_to_multiple(x, self.patch)
        pixels, counts = self._patchify(padded)
        n = pixels.shape[0]
        k, v = self.to_kv(pixels).chunk(2, dim=-1)
        tokens = self.tokens.expand(n, -1, -1, -1)  # (N, H, T, C/H)
        attend = nn.functional.scaled_dot_product_attention
        # unscaled softmax(q k^T) as in the reference implementation
        tokens = tokens + attend(tokens, self._split(k), self._split(v), scale=1.0)
        z = tokens.transpose(1, 2).reshape(n, -1, self.width)  # (N, T, C)
        phase = math.pi * z[..., None] * self.frequencies
        modes = torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)  # (N, T, C, 2K)
        z = z + torch.einsum("ntck,ck->ntc", modes, self.basis_weights)
        zh = self._split(z)
        out = pixels + attend(self._split(self.to_q(pixels)), zh, zh, scale=1.0).transpose(
            1, 2
        ).reshape(n, -1, self.width)
        return crop(self._unpatchify(out, b, counts), sizes)


class LSM(Operator):
    """Latent Spectral Model.

    Args:
        in_channels, out_channels, dim: as for every operator (dim 1 or 2).
        width: d, the channels of the finest scale (multiple of ``heads``).
        n_stages: down-sampling stages of the U-Net (4 in the paper).
        num_tokens: latent tokens per patch (4).
        num_basis: sin/cos basis operators of the latent transition (12).
        heads: attention heads (8).
        patch_size: patch points per axis at every scale (paper: 6 on 85x85 Darcy).
        norm: normalisation in the double convolutions: "group" (default: a sample's output
            does not depend on its batch and train and eval modes agree), "batch" (the
            paper; use SyncBatchNorm under DDP) or "none".
        positional_embedding: append [0, 1] coordinates to the input (paper: yes).

    The paper's Darcy setting is width=64, patch_size=6; the defaults are smaller
    (width=32, patch_size=4) so that CPU training stays practical.
    """

    name = "lsm"

    @records_config
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 2,
        width: int = 32,
        n_stages: int = 4,
        num_tokens: int = 4,
        num_basis: int = 12,
        heads: int = 8,
        patch_size: int | list[int] = 4,
        norm: str = "group",
        positional_embedding: bool = True,
    ) -> None:
        super().__init__()
        self._init_io(in_channels, out_channels, dim)
        if not isinstance(positional_embedding, bool):
            # (any truthy value, "no" included, turned the coordinates on)
            raise OperatorConfigError(f"lsm: positional_embedding must be True or False, got "
                                      f"{positional_embedding!r}")
        if not isinstance(width, int) or width < heads or width % heads:
            raise OperatorConfigError(
                f"lsm: width must be a positive multiple of heads={heads}, got {width!r}"
            )
        if not isinstance(n_stages, int) or n_stages < 1:
            raise OperatorConfigError(f"lsm: n_stages must be >= 1, got {n_stages!r}")
        for label, value in (("num_tokens", num_tokens), ("num_basis", num_basis)):
            if not isinstance(value, int) or value < 1:
                raise OperatorConfigError(f"lsm: {label} must be a positive integer, got {value!r}")
        if norm not in NORMS:
            raise OperatorConfigError(f"lsm: norm {norm!r} is not one of {NORMS}")
        patch = (patch_size,) * dim if isinstance(patch_size, int) else tuple(patch_size)
        if len(patch) != dim or min(patch) < 1:
            raise OperatorConfigError(f"lsm: patch_size must be >= 1 per axis, got {patch_size!r}")
        self.n_stages = n_stages
        self.norm = norm
        self.positional_embedding = positional_embedding
        conv = layer_for("Conv", dim)
        # Encoder widths d, 2d, ..., 2^(n-1) d, then the bottom repeats the last width.
        widths = [width * 2**j for j in range(n_stages)] + [width * 2 ** (n_stages - 1)]
        self.lift = conv(in_channels + (dim if positional_embedding else 0), width, 1)
        self.inc = DoubleConv(width, width, dim, norm)
        pool = layer_for("MaxPool", dim)
        self.down = nn.ModuleList(
            nn.Sequential(pool(2), DoubleConv(widths[j], widths[j + 1], dim, norm))
            for j in range(n_stages)
        )
        self.spectral = nn.ModuleList(
            NeuralSpectralBlock(w, num_basis, num_tokens, heads, patch) for w in widths
        )
        # Up stage j merges the skip of level j with the coarser features.
        self.up = nn.ModuleList()
        for j in range(n_stages):
            c_in = widths[j] + (widths[j + 1] if j == n_stages - 1 else widths[j])
            c_out = widths[j - 1] if j > 0 else width
            self.up.append(DoubleConv(c_in, c_out, dim, norm, c_mid=c_in // 2))
        self.out_conv = conv(width, width, 1)
        self.head = nn.Sequential(conv(width, 128, 1), nn.GELU(), conv(128, out_channels, 1))
        self._mode = "linear" if dim == 1 else "bilinear"

    @property
    def positions(self) -> str | None:
        return "endpoints" if self.positional_embedding else None

    @property
    def min_size(self) -> int:
        return 2**self.n_stages

    def forward(self, x: torch.Tensor,
                coordinates: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, C_in, *grid) -> (B, C_out, *grid). ``coordinates``: the appended positions
        of the grid's points, one 1D tensor per axis (default: 0, ..., 1 along each axis,
        as in training; another resolution of the training domain passes its points'
        positions in that convention)."""
        self.check_input(x)
        if min(x.shape[2:]) < self.min_size:
            raise OperatorInputError(
                f"lsm with n_stages={self.n_stages} needs at least {self.min_size} points per "
                f"axis, got shape {tuple(x.shape)}; use fewer stages or a finer grid"
            )
        if x.shape[0] == 0:
            return self.empty_output(x)
        coarsest = [n // 2**self.n_stages for n in x.shape[2:]]
        if self.training and self.norm == "batch" and x.shape[0] * math.prod(coarsest) < 2:
            # (torch's own error: "Expected more than 1 value per channel when training")
            raise OperatorInputError(
                f"lsm with norm='batch' normalises over the batch and the points of its "
                f"coarsest level ({'x'.join(map(str, coarsest))} here), which needs more "
                f"than one value in training: a batch of {x.shape[0]} on a "
                f"{'x'.join(map(str, x.shape[2:]))} grid has one; use a larger batch (in "
                "training, a --data.batch_size that leaves no last batch of one sample), "
                "norm='group', fewer n_stages or a finer grid")
        if self.positional_embedding:
            grid = (unit_grid(x.shape[2:], device=x.device, dtype=x.dtype)
                    if coordinates is None else check_coordinates("lsm", coordinates, x))
            x = torch.cat([x, grid.expand(x.shape[0], *grid.shape)], dim=1)
        skips = [self.inc(self.lift(x))]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = self.spectral[-1](skips[-1])
        for j in range(self.n_stages - 1, -1, -1):
            skip = self.spectral[j](skips[j])
            h = nn.functional.interpolate(
                h, size=skip.shape[2:], mode=self._mode, align_corners=True
            )
            h = self.up[j](torch.cat([skip, h], dim=1))
        return self.head(self.out_conv(h))
