"""MgNO: the paper's parameter count, V-cycle structure, boundary modes, odd grids."""

from __future__ import annotations

import pytest
import torch

from pdeforge import operators
from pdeforge.operators import OperatorConfigError, OperatorInputError
from pdeforge.operators.mgno import MgConv


def test_darcy_rough_configuration_has_the_papers_parameter_count():
    # He, Liu, Xu (ICLR 2024), Darcy rough: 4 layers, 24 channels, 6 levels, smoothing
    # 1,1,1,1,1,2 -> "0.57 M" parameters.
    model = operators.build("mgno", in_channels=1, out_channels=1, dim=2)
    count = model.count_parameters()
    assert abs(count - 0.57e6) / 0.57e6 < 0.02
    # and exactly what the structure implies (layer 1 reads 1 channel, layers 2-4 read 24)
    c, levels, steps = 24, 6, 6  # 5 levels with 1 step + 2 on the coarsest, minus the first S
    first = 16 * c * c * (levels - 1) + 9 * c + (levels - 1) * (9 * c * c + 9) + steps * 18 * c
    inner = 16 * c * c * (levels - 1) + 9 * c * c + (levels - 1) * 18 * c * c + steps * 18 * c * c
    expected = first + (c + c) + 3 * (inner + c * c + c) + c
    assert count == expected == 572_661


@pytest.mark.parametrize("n", [85, 211, 64, 33])
def test_odd_and_even_grids(n):
    model = operators.build("mgno", channels=4, n_layers=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, n, n)).shape == (1, 1, n, n)


def test_v_cycle_is_linear_in_f():
    conv = MgConv(2, 3, [1, 1, 2], [0, 1], dim=2, padding_mode="zeros").double()
    f, g = torch.randn(2, 1, 2, 20, 20, dtype=torch.float64)
    torch.testing.assert_close(conv(2 * f - 3 * g), 2 * conv(f) - 3 * conv(g))


def test_circular_padding_gives_a_translation_equivariant_layer():
    model = (
        operators.build("mgno", channels=4, n_layers=2, levels=3, padding_mode="circular")
        .double()
        .eval()
    )
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    shift = (8, 4)  # multiples of 2**(levels-1) keep the coarse grids aligned
    with torch.no_grad():
        torch.testing.assert_close(model(x.roll(shift, (2, 3))), model(x).roll(shift, (2, 3)))


def test_zero_padding_is_not_translation_equivariant():
    model = operators.build("mgno", channels=4, n_layers=2, levels=3).double().eval()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(model(x.roll((8, 4), (2, 3))), model(x).roll((8, 4), (2, 3)))


def test_bias_function_is_resolution_independent_and_trainable():
    model = operators.build("mgno", channels=4, n_layers=2, levels=3, bias="function")
    base = operators.build("mgno", channels=4, n_layers=2, levels=3)
    assert model.count_parameters() == base.count_parameters() + 2 * 4 * 16 * 16
    y = model(torch.randn(2, 1, 40, 24))
    y.square().mean().backward()
    assert model.bias_fields[0].grad.abs().sum() > 0


def test_smoothing_options_change_the_structure():
    a = operators.build("mgno", levels=3, smoothing=[1, 1, 1], channels=8, n_layers=1)
    b = operators.build(
        "mgno", levels=3, smoothing=[2, 1, 1], post_smoothing=1, channels=8, n_layers=1
    )
    per_step = 2 * 9 * 8 * 1  # A and S of one step in layer 1 (f has 1 channel)
    # one more pre-smoothing step, one post-smoothing step on each of the two levels
    # with an upward pass (the coarsest has none)
    assert b.count_parameters() - a.count_parameters() == per_step * (1 + 2)


def test_every_post_smoothing_weight_is_used_and_old_checkpoints_load():
    """The coarsest level had post-smoothing weights no upward pass used: never trained,
    counted, and a DDP run stopped on them ("parameters that were not used")."""
    torch.manual_seed(0)
    model = operators.build("mgno", levels=3, post_smoothing=1, channels=4, n_layers=2)
    model(torch.randn(2, 1, 16, 12)).square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert unused == []
    listed = operators.build("mgno", levels=3, post_smoothing=[2, 1, 0], channels=4,
                             n_layers=1)
    assert [len(p) for p in listed.convs[0].post] == [2, 1]
    # one entry per level, as configs from before gave it: the coarsest's is not used
    old_style = operators.build("mgno", levels=3, post_smoothing=[2, 1, 5], channels=4,
                                n_layers=1)
    assert [len(p) for p in old_style.convs[0].post] == [2, 1]
    with pytest.raises(OperatorConfigError, match=r"post_smoothing has 1 entries but "
                       r"levels=3: give one for each level but the coarsest \(2"):
        operators.build("mgno", levels=3, post_smoothing=[1])
    # a state dict saved with the coarsest level's weights (post.2) loads, strictly
    old = dict(model.state_dict())
    for layer in range(2):
        for name in ("A", "S"):
            old[f"convs.{layer}.post.2.0.{name}.weight"] = torch.zeros(4, 4, 3, 3)
    fresh = operators.build("mgno", levels=3, post_smoothing=1, channels=4, n_layers=2)
    fresh.load_state_dict(old)
    x = torch.randn(1, 1, 16, 12)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_residual_restriction_adds_one_convolution_per_coarse_level():
    plain = operators.build("mgno", levels=3, channels=8, n_layers=1)
    residual = operators.build("mgno", levels=3, channels=8, n_layers=1, residual_restriction=True)
    assert residual.count_parameters() - plain.count_parameters() == 2 * 9 * 8 * 1
    assert residual(torch.randn(1, 1, 20, 20)).shape == (1, 1, 20, 20)


def test_421_grid_in_2d():
    model = operators.build("mgno", channels=2, n_layers=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 421, 421)).shape == (1, 1, 421, 421)


def test_bad_options_and_small_grids():
    with pytest.raises(OperatorConfigError, match="smoothing has 2 entries but levels=3"):
        operators.build("mgno", levels=3, smoothing=[1, 1])
    with pytest.raises(OperatorConfigError, match="padding_mode"):
        operators.build("mgno", padding_mode="mirror")
    with pytest.raises(OperatorConfigError, match=r"smoothing\[0\]"):
        operators.build("mgno", levels=2, smoothing=[0, 1])
    model = operators.build("mgno", levels=4, padding_mode="reflect", channels=4, n_layers=1)
    with pytest.raises(OperatorInputError, match="at least 9 points"):
        model(torch.randn(1, 1, 8, 8))
