"""The spectral convolution of FNO and MG-TFNO against an independent numpy transform,
on odd and even grids (neuraloperator 2.0.0 put every frequency of an odd axis one bin
off) and in float64 (it computed every spectral layer in complex64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdeforge import operators
from pdeforge.operators.spectral_conv import SpectralConv


def numpy_spectral_conv(x: np.ndarray, weight: np.ndarray, modes: tuple[int, int]) -> np.ndarray:
    """y = irfft2(R . rfft2(x)) with R's index j on axis 0 meaning frequency j - m0 // 2
    (frequencies -(k // 2) ... k - k // 2 - 1 of the k = min(n0, m0) kept) and index l on
    axis 1 frequency l, written out mode by mode."""
    n0, n1 = x.shape[-2:]
    spec = np.fft.rfft2(x, norm="forward")
    out = np.zeros((x.shape[0], weight.shape[1], n0, n1 // 2 + 1), dtype=complex)
    k0 = min(n0, modes[0])
    k1 = min(n1 // 2 + 1, weight.shape[-1])
    for f in range(-(k0 // 2), k0 - k0 // 2):
        for g in range(k1):
            out[:, :, f % n0, g] = spec[:, :, f % n0, g] @ weight[:, :, f + modes[0] // 2, g]
    return np.fft.irfft2(out, s=(n0, n1), norm="forward")


@pytest.mark.parametrize("shape", [(32, 32), (33, 32), (32, 33), (21, 17), (7, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_spectral_convolution_is_the_transform_it_claims(shape, dtype):
    torch.manual_seed(0)
    modes = (12, 12)
    layer = SpectralConv(3, 2, n_modes=modes, bias=False)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    weight = torch.randn(layer.weight.shape, dtype=complex_dtype)
    with torch.no_grad():
        layer.weight.tensor.data = weight  # a dense tensorly-torch weight
    x = torch.randn(4, 3, *shape, dtype=dtype)
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == dtype
    expected = numpy_spectral_conv(x.double().numpy(), weight.cdouble().numpy(), modes)
    error = np.abs(y.double().numpy() - expected).max() / np.abs(expected).max()
    assert error < (1e-13 if dtype == torch.float64 else 1e-5), error


@pytest.mark.parametrize("name, options", [
    ("fno", {}), ("mgtfno", {"levels": 0}), ("mgtfno", {"levels": 1}),
])
@pytest.mark.parametrize("shape", [(33, 32), (85, 85), (32, 33)])
def test_a_constant_field_stays_constant_and_a_shift_commutes(name, options, shape):
    """Without coordinates appended, a Fourier operator commutes with circular shifts;
    a constant field maps to a constant field (off by 1.6e-2 at 33 x 32 before)."""
    torch.manual_seed(0)
    model = operators.build(name, dim=2, positional_embedding=None, **options).double().eval()
    with torch.no_grad():
        flat = model(torch.ones(1, 1, *shape, dtype=torch.float64))
        x = torch.randn(1, 1, *shape, dtype=torch.float64)
        moved = model(torch.roll(x, (5, 3), dims=(-2, -1)))
        y = model(x)
    assert float(flat.std() / flat.abs().mean()) < 1e-10
    if options.get("levels", 0) == 0:  # patches cut the domain: no shift symmetry
        error = (moved - torch.roll(y, (5, 3), dims=(-2, -1))).abs().max() / y.abs().max()
        assert float(error) < 1e-10, float(error)


@pytest.mark.parametrize("n", [31, 32, 9])
def test_the_1d_spectral_convolution_is_the_transform_it_claims(n):
    torch.manual_seed(1)
    layer = SpectralConv(2, 3, n_modes=(12,), bias=False)
    with torch.no_grad():
        layer.weight.tensor.data = torch.randn(layer.weight.shape, dtype=torch.complex128)
    x = torch.randn(2, 2, n, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x).numpy()
    spec = np.fft.rfft(x.numpy(), norm="forward")
    w = layer.weight.tensor.data.numpy()
    kept = min(n // 2 + 1, w.shape[-1])
    out = np.zeros((2, 3, n // 2 + 1), dtype=complex)
    for g in range(kept):
        out[:, :, g] = spec[:, :, g] @ w[:, :, g]
    expected = np.fft.irfft(out, n=n, norm="forward")
    assert np.abs(y - expected).max() < 1e-13 * np.abs(expected).max()
