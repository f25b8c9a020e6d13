"""Fourier neural operator (dense baseline), from neuraloperator.

Li et al., "Fourier Neural Operator for Parametric Partial Differential Equations",
ICLR 2021: lifting P, layers v <- act(W v + F^-1(R . F v)) with R truncated to the lowest
modes, projection Q. The implementation is ``neuralop.models.FNO``; this wrapper gives it
the registry interface (``dim``, recorded config, input checks). Note neuraloperator 2.0
counts ``n_modes`` per dimension centred on zero: the FNO paper's modes=12 is n_modes=24.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from neuralop.layers.embeddings import GridEmbeddingND
from neuralop.models import FNO as _NeuralopFNO
from torch import nn

from pdeforge.operators.base import (
    Operator,
    OperatorConfigError,
    OperatorInputError,
    as_tuple,
    check_coordinates,
    is_finite_number,
    real_numel,
    records_config,
)
from pdeforge.operators.spectral_conv import SpectralConv


def neuralop_fno(
    *,
    in_channels: int,
    out_channels: int,
    dim: int,
    n_modes: int | list[int],
    hidden_channels: int,
    n_layers: int,
    lifting_channel_ratio: float,
    projection_channel_ratio: float,
    positional_embedding: str | None,
    domain_padding: float | None,
    factorization: str | None = None,
    rank: float = 1.0,
) -> _NeuralopFNO:
    """Construct neuraloperator's FNO (dense when ``factorization`` is None).

    neuraloperator takes the channel ratios and the padding as given: a ratio that makes
    no channel fails only in the first forward pass, a negative one with a raw
    RuntimeError, and a negative or NaN padding is quietly no padding; they are checked
    here.
    """
    for label, ratio in (("lifting_channel_ratio", lifting_channel_ratio),
                         ("projection_channel_ratio", projection_channel_ratio)):
        if not (is_finite_number(ratio) and int(ratio * hidden_channels) >= 1):
            raise OperatorConfigError(
                f"{label} must be a positive number such that {label} * hidden_channels "
                f"({hidden_channels}) gives at least one channel, got {ratio!r}"
            )
    if domain_padding is not None and not (
            is_finite_number(domain_padding) and domain_padding >= 0):
        raise OperatorConfigError(
            f"domain_padding must be None (no padding) or a fraction >= 0 of the grid, got "
            f"{domain_padding!r}"
        )
    # the spectral layers' forward corrected (odd grids, float64): spectral_conv.py
    kwargs: dict[str, Any] = {"conv_module": SpectralConv}
    if factorization is not None:
        kwargs.update(factorization=factorization, rank=rank, implementation="factorized")
    model = _NeuralopFNO(
        n_modes=as_tuple(n_modes, dim, "n_modes"),
        in_channels=in_channels,
        out_channels=out_channels,
        hidden_channels=hidden_channels,
        n_layers=n_layers,
        lifting_channel_ratio=lifting_channel_ratio,
        projection_channel_ratio=projection_channel_ratio,
        positional_embedding=positional_embedding,
        domain_padding=domain_padding,
        **kwargs,
    )
    if isinstance(model.positional_embedding, GridEmbeddingND):
        embedding = model.positional_embedding
        model.positional_embedding = PlacedGridEmbedding(
            embedding.in_channels, embedding.dim, embedding.grid_boundaries)
    return model


class PlacedGridEmbedding(GridEmbeddingND):
    """neuraloperator's grid embedding (the coordinates i / n_d of [0, 1) appended as
    channels) whose positions :meth:`FNO.forward` can give for one pass (``placed``, a
    (d, *grid) tensor): another resolution of a cell or vertex grid is not i / n' at the
    training points' positions."""

    placed: torch.Tensor | None = None

    def grid(self, spatial_dims, device, dtype):
        if self.placed is None:
            return super().grid(spatial_dims, device, dtype)
        return [axis.to(device=device, dtype=dtype)[None, None] for axis in self.placed]


_COMPLEX_OF = {
    torch.float16: torch.complex32,
    torch.bfloat16: torch.complex64,  # no complex bfloat16: spectral weights stay complex64
    torch.float32: torch.complex64,
    torch.float64: torch.complex128,
}


class NeuralopWrapper(nn.Module):
    """Adapt a wrapped neuraloperator model to plain torch conventions.

    * ``module.double()`` converts only real tensors, which leaves neuraloperator's complex
      spectral weights in complex64 and makes a float64 forward pass fail, while
      ``module.to(torch.float64)`` (also from a parent module or Lightning's
      "bf16-true") casts them to a real dtype, dropping their imaginary parts; complex
      tensors keep their values and, after every conversion, take the complex dtype of
      the real weights.
    * neuraloperator's ``state_dict`` adds a ``_metadata`` entry holding its constructor
      arguments, Python functions included, which ``torch.load(weights_only=True)``
      refuses; the state dict here holds tensors only (the architecture is in ``config``).
    """

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        def keep_complex(t: torch.Tensor) -> torch.Tensor:
            if not t.is_complex():
                return fn(t)
            with warnings.catch_warnings():  # "casting complex values to real discards..."
                warnings.simplefilter("ignore", UserWarning)
                out = fn(t)
            # torch's to(real dtype) casts complex tensors too, dropping their imaginary
            # parts: such a tensor keeps its values (moved to the device); its complex
            # dtype is matched to the real weights below
            return out if out.is_complex() else t.to(out.device)

        super()._apply(keep_complex, recurse)
        real = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
        target = _COMPLEX_OF.get(real) if real is not None else None
        if target is not None:
            for tensor in [*self.parameters(), *self.buffers()]:
                if tensor.is_complex() and tensor.dtype != target:
                    tensor.data = tensor.data.to(target)
        return self


def spectral_parameter_count(model: nn.Module) -> int:
    """Real numbers in the spectral weights (the R tensors, biases excluded) of an FNO."""
    convs = model.fno_blocks.convs
    return sum(real_numel(p) for name, p in convs.named_parameters() if "bias" not in name)


class FNO(NeuralopWrapper, Operator):
    """Dense FNO (neuraloperator) behind the registry.

    Args:
        in_channels, out_channels, dim: as for every operator (dim 1, 2 or 3).
        n_modes: Fourier modes kept per dimension (neuraloperator 2.0 convention).
        hidden_channels: width of the Fourier layers.
        n_layers: number of Fourier layers.
        lifting_channel_ratio, projection_channel_ratio: widths of the lifting and
            projection MLPs relative to ``hidden_channels``.
        positional_embedding: "grid" appends coordinates; None appends nothing.
        domain_padding: fraction of zero padding for non-periodic problems (None: none).
    """

    name = "fno"
    dims = (1, 2, 3)  # neuraloperator's FNO is n-dimensional
    half_weights = False

    @records_config
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        dim: int = 2,
        n_modes: int | list[int] = 16,
        hidden_channels: int = 32,
        n_layers: int = 4,
        lifting_channel_ratio: float = 2,
        projection_channel_ratio: float = 2,
        positional_embedding: str | None = "grid",
        domain_padding: float | None = None,
    ) -> None:
        super().__init__()
        self._init_io(in_channels, out_channels, dim)
        self.model = neuralop_fno(
            in_channels=in_channels,
            out_channels=out_channels,
            dim=dim,
            n_modes=n_modes,
            hidden_channels=hidden_channels,
            n_layers=n_layers,
            lifting_channel_ratio=lifting_channel_ratio,
            projection_channel_ratio=projection_channel_ratio,
            positional_embedding=positional_embedding,
            domain_padding=domain_padding,
        )

    def spectral_parameters(self) -> int:
        return spectral_parameter_count(self.model)

    @property
    def positions(self) -> str | None:
        embedding = self.model.positional_embedding
        return "periodic" if isinstance(embedding, PlacedGridEmbedding) else None

    def forward(self, x: torch.Tensor,
                coordinates: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, C_in, *grid) -> (B, C_out, *grid). ``coordinates``: the appended positions
        of the grid's points, one 1D tensor per axis (default i / n along each axis, as
        in training; another resolution of the training domain passes its points'
        positions in that convention)."""
        self.check_input(x, min_size=2)
        if x.shape[0] == 0:
            return self.empty_output(x)
        if coordinates is None:
            return self.model(x)
        if self.positions is None:
            raise OperatorInputError(
                "fno: coordinates were given to a model built without positional_embedding")
        embedding = self.model.positional_embedding
        embedding.placed = check_coordinates("fno", coordinates, x)
        try:
            return self.model(x)
        finally:
            embedding.placed = None
