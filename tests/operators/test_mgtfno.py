"""FNO and MG-TFNO: compression against the dense FNO, patching, odd grids."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from neuralop.training.patching import MultigridPatching2D

from pdeforge import operators
from pdeforge.operators import OperatorInputError
from pdeforge.operators.mgtfno import mg_patch_1d, mg_unpatch_1d


@pytest.mark.parametrize("dim", [1, 2])
def test_tucker_rank_01_keeps_about_a_tenth_of_the_spectral_weights(dim):
    model = operators.build("mgtfno", dim=dim, rank=0.1, levels=0)
    report = model.compression()
    dense = operators.build("fno", dim=dim)
    assert report["dense_spectral_parameters"] == dense.spectral_parameters()
    fraction = report["spectral_parameters"] / report["dense_spectral_parameters"]
    assert 0.07 < fraction < 0.13, fraction
    assert report["parameters"] == model.count_parameters() < dense.count_parameters()


def test_patching_levels_widen_only_the_lifting():
    flat = operators.build("mgtfno", levels=0)
    patched = operators.build("mgtfno", levels=2)
    # (L + 1) input channels per data channel: only the lifting layer grows
    assert patched.model.lifting.fcs[0].in_channels == flat.model.lifting.fcs[0].in_channels + 2


@pytest.mark.parametrize("levels,size,margin", [(1, 64, 8), (2, 64, 8), (1, 32, 0), (2, 128, 16)])
def test_1d_patching_matches_neuraloperators_2d_patching(levels, size, margin):
    """On a field constant along y, the 2D patches are the 1D patches, copied along y."""
    x = torch.randn(3, 2, size, dtype=torch.float64)
    x2 = x[..., None].expand(3, 2, size, size).contiguous()
    with contextlib.redirect_stdout(io.StringIO()):
        patcher = MultigridPatching2D(
            torch.nn.Identity(), levels=levels, padding_fraction=margin / size, stitching=True
        )
    patches_2d, _ = patcher.patch(x2, None)
    patches_1d = mg_patch_1d(x, levels, margin)
    n = 2**levels
    assert patches_1d.shape == (3 * n, 2 * (levels + 1), size // n + 2 * margin)
    grouped = patches_2d.reshape(3, n, n, *patches_2d.shape[1:])
    for j in range(n):
        assert torch.equal(
            grouped[:, :, j, :, :, 0], patches_1d.reshape(3, n, *patches_1d.shape[1:])
        )
    assert torch.equal(mg_unpatch_1d(patches_1d[:, :2], levels, margin), x)


@pytest.mark.parametrize("dim", [1, 2])
def test_stitched_output_is_continuous_with_the_patches(dim):
    """A model that returns its level-0 input channel gives back the input exactly."""
    model = operators.build("mgtfno", dim=dim, levels=2)

    class FirstChannel(torch.nn.Module):
        def forward(self, x):
            return x[:, :1]

    model.model = FirstChannel()
    x = torch.randn(2, 1, *([67] * dim))  # odd: padded to a multiple of 4, then cropped
    assert torch.equal(model(x), x)


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("levels,smallest", [(1, 7), (2, 29)])
def test_smallest_grid_works_and_one_less_is_refused(dim, levels, smallest):
    model = operators.build(
        "mgtfno", dim=dim, levels=levels, n_modes=4, hidden_channels=4, n_layers=1
    ).eval()
    assert model.min_size == smallest
    with torch.no_grad():
        for n in (smallest, smallest + 1, smallest + 2):
            assert model(torch.randn(1, 1, *([n] * dim))).shape == (1, 1, *([n] * dim))
    with pytest.raises(OperatorInputError, match=f"at least {smallest} points"):
        model(torch.randn(1, 1, *([smallest - 1] * dim)))


def test_complex_weights_count_as_two_real_parameters():
    model = operators.build("fno", dim=1)
    complex_numel = sum(p.numel() for p in model.parameters() if p.is_complex())
    real_numel = sum(p.numel() for p in model.parameters() if not p.is_complex())
    assert complex_numel > 0
    assert model.count_parameters() == real_numel + 2 * complex_numel


def test_fno_float64_uses_complex128_spectral_weights():
    model = operators.build("fno", dim=1).double()
    complex_dtypes = {p.dtype for p in model.parameters() if p.is_complex()}
    assert complex_dtypes == {torch.complex128}
