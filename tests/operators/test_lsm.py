"""LSM: patchify round trip, padding to patch multiples, normalisation choices."""

from __future__ import annotations

import pytest
import torch

from pdeforge import operators
from pdeforge.operators import OperatorConfigError, OperatorInputError
from pdeforge.operators.lsm import NeuralSpectralBlock


@pytest.mark.parametrize("patch", [(3, 5), (4, 4)])
def test_patchify_round_trip(patch):
    block = NeuralSpectralBlock(16, 12, 4, 4, patch)
    x = torch.randn(2, 16, patch[0] * 3, patch[1] * 2)
    pixels, counts = block._patchify(x)
    assert pixels.shape == (2 * 6, patch[0] * patch[1], 16)
    # pixels of the first patch are the top-left block of the field
    torch.testing.assert_close(pixels[0].T.reshape(16, *patch), x[0, :, : patch[0], : patch[1]])
    torch.testing.assert_close(block._unpatchify(pixels, 2, counts), x)


def test_spectral_block_handles_sizes_that_are_not_patch_multiples():
    block = NeuralSpectralBlock(16, 12, 4, 4, (6, 6))
    x = torch.randn(2, 16, 17, 10)
    assert block(x).shape == x.shape


def test_paper_configuration_builds():
    model = operators.build("lsm", width=64, patch_size=6, norm="batch")
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 85, 85)).shape == (1, 1, 85, 85)


def test_bad_options():
    with pytest.raises(OperatorConfigError, match="multiple of heads"):
        operators.build("lsm", width=20)
    with pytest.raises(OperatorConfigError, match="norm"):
        operators.build("lsm", norm="layer")
    model = operators.build("lsm", n_stages=4)
    with pytest.raises(OperatorInputError, match="at least 16 points"):
        model(torch.randn(1, 1, 12, 12))
    # any truthy value ("no" included) turned the coordinates on; heads=0 divided by 0
    with pytest.raises(OperatorConfigError, match="positional_embedding must be True or "
                                                  "False, got 'no'"):
        operators.build("lsm", positional_embedding="no")
    from pdeforge.operators.lsm import LSM

    with pytest.raises(OperatorConfigError, match="heads must be a positive integer"):
        LSM(heads=0)


@pytest.mark.parametrize("dim, shape", [(2, (1, 1, 4, 5)), (1, (1, 1, 7))])
def test_batch_norm_with_one_value_per_channel_is_explained(dim, shape):
    """Training with norm='batch' on a batch of one whose coarsest level is one point
    ended in torch's "Expected more than 1 value per channel when training"."""
    torch.manual_seed(0)
    model = operators.build("lsm", dim=dim, norm="batch", width=8, heads=4, n_stages=2)
    with pytest.raises(OperatorInputError, match=r"norm='batch' .* coarsest level \(1"
                       r".*a batch of 1 .*norm='group'"):
        model.train()(torch.randn(*shape))
    assert model.train()(torch.randn(2, *shape[1:])).shape == (2, *shape[1:])
    with torch.no_grad():  # evaluation uses the running statistics: one sample is fine
        assert model.eval()(torch.randn(*shape)).shape == shape


@pytest.mark.parametrize("shape", [(16, 16), (17, 20)])
def test_coordinates_given_as_the_default_change_nothing_and_others_do(shape):
    torch.manual_seed(0)
    model = operators.build("lsm", width=8, n_stages=2, heads=2, patch_size=2).eval()
    x = torch.randn(2, 1, *shape)
    axes = [torch.linspace(0, 1, n) for n in shape]
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(model(x, coordinates=axes), plain)
        shifted = model(x, coordinates=[axes[0] + 0.1, axes[1]])
    assert (shifted - plain).abs().max() > 1e-4
    with pytest.raises(OperatorInputError, match=r"sizes \(16, 16\)|sizes \(17, 20\)"):
        model(x, coordinates=axes[:1])
    with pytest.raises(OperatorInputError, match="NaN"):
        model(x, coordinates=[axes[0] * float("nan"), axes[1]])
