"""The spectral convolution of FNO and MG-TFNO: neuraloperator's ``SpectralConv`` with its
forward pass corrected.

Li et al., ICLR 2021, eq. (4): ``(K v)(x) = F^-1(R . (F v))(x)``, ``R`` acting on the
lowest ``n_modes`` frequencies of each axis (the real FFT's half spectrum on the last).
The weights, their factorisation (dense, Tucker, CP, TT: tensorly-torch) and the
contraction are neuraloperator's; only ``forward`` is written here, because the released
one (neuraloperator 1.0 to 2.0.0) has two faults that change what the model computes:

* it moves the zero frequency back with ``fftshift`` where ``ifftshift`` undoes the
  first shift: on an axis of odd length (other than the last, which is not shifted) every
  frequency lands one bin off, so a constant input gave an output varying along that
  axis and a circular shift of the input moved the output by something else (relative
  error 1.6e-2 at 33 x 32; upstream fixed it after 2.0.0, commit 4b3e15ae, unreleased);
* it allocates the output spectrum as complex64 whatever the input: a float64 model was
  float32 in every spectral layer (6.7e-8 relative error against a float64 transform).

Frequency ``f`` of a non-last axis uses weight index ``f + max_modes // 2`` at every
resolution, also when the grid has fewer frequencies than the weights (neuraloperator's
slicing of the weights shifts that by one when the difference is odd).
"""

from __future__ import annotations

import torch
from neuralop.layers.spectral_convolution import SpectralConv as _NeuralopSpectralConv

from pdeforge.operators.base import OperatorConfigError


class SpectralConv(_NeuralopSpectralConv):
    """neuraloperator's spectral convolution, real data, full precision, forward corrected
    (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.complex_data or self.fno_block_precision != "full":
            raise OperatorConfigError(
                "pdeforge's SpectralConv takes real fields in full precision (complex_data "
                f"{self.complex_data}, fno_block_precision {self.fno_block_precision!r}); "
                "use neuraloperator's own class for the others")

    def forward(self, x: torch.Tensor, output_shape: tuple[int, ...] | None = None
                ) -> torch.Tensor:
        batch, _, *sizes = x.shape
        axes = list(range(-self.order, 0))
        shifted = axes[:-1]  # the last axis holds the real FFT's frequencies 0, 1, ...
        spectrum = torch.fft.rfftn(x, dim=axes, norm=self.fft_norm)
        if shifted:  # (torch refuses an empty list of axes)
            spectrum = torch.fft.fftshift(spectrum, dim=shifted)
        out = torch.zeros((batch, self.out_channels, *spectrum.shape[2:]),
                          dtype=spectrum.dtype, device=spectrum.device)
        take_x = [slice(None), slice(None)]
        take_w = [slice(None)] if self.separable else [slice(None), slice(None)]
        last = self.order - 1
        for axis, (n, modes, max_modes) in enumerate(
                zip(spectrum.shape[2:], self.n_modes, self.max_n_modes, strict=True)):
            kept = min(n, modes)
            if axis == last:
                take_x.append(slice(0, kept))
                take_w.append(slice(0, kept))
            else:  # frequencies -(kept // 2) ... kept - kept // 2 - 1, zero at index n // 2
                low = kept // 2
                take_x.append(slice(n // 2 - low, n // 2 - low + kept))
                take_w.append(slice(max_modes // 2 - low, max_modes // 2 - low + kept))
        out[tuple(take_x)] = self._contract(spectrum[tuple(take_x)], self.weight[tuple(take_w)],
                                            separable=self.separable)
        if output_shape is not None:
            sizes = list(output_shape)
        elif self.resolution_scaling_factor is not None:
            sizes = [round(s * r) for s, r in zip(sizes, self.resolution_scaling_factor,
                                                  strict=True)]
        if shifted:
            out = torch.fft.ifftshift(out, dim=shifted)
        y = torch.fft.irfftn(out, s=sizes, dim=axes, norm=self.fft_norm)
        return y if self.bias is None else y + self.bias
