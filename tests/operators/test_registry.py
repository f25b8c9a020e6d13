"""Every registered operator: shapes, rebuild from config, dtypes, bad input."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pdeforge import operators
from pdeforge.errors import PdeforgeError
from pdeforge.operators import OperatorConfigError, OperatorInputError

NAMES = ["deeponet", "fno", "lsm", "mgno", "mgtfno"]


def test_available_lists_the_five_architectures():
    assert operators.available() == NAMES


def test_unknown_name_suggests_the_closest():
    with pytest.raises(OperatorConfigError, match=r"did you mean 'mgno'.*available: deeponet"):
        operators.build("mgnoo")


def test_names_match_in_any_case_and_with_separators():
    for written, name in [("MgNO", "mgno"), ("MG-TFNO", "mgtfno"), ("FNO", "fno"),
                          ("LSM", "lsm"), ("DeepONet", "deeponet")]:
        assert operators.build(written).name == name


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("deeponet", {"basis": 0}, "basis must be a positive integer"),
    ("fno", {"n_layers": 0}, "n_layers must be a positive integer"),
    ("mgtfno", {"n_modes": 0}, "n_modes must be a positive integer"),
    ("fno", {"n_modes": (8, 0)}, r"n_modes must be a positive integer.*\(8, 0\)"),
    ("fno", {"hidden_channels": -1}, "hidden_channels must be a positive integer"),
    ("mgtfno", {"factorization": "bogus"}, "mgtfno: .*bogus"),
    ("fno", {"lifting_channel_ratio": -1}, "lifting_channel_ratio must be a positive"),
    ("mgtfno", {"projection_channel_ratio": 0.01}, r"at least one channel, got 0.01"),
    ("fno", {"domain_padding": -0.5}, "domain_padding must be None"),
    ("mgtfno", {"domain_padding": float("nan")}, "domain_padding must be None"),
    ("mgno", {"smoothing": 1.5}, "smoothing .* must be an integer >= 0, got 1.5"),
    ("mgno", {"smoothing": "111111"}, "smoothing .* must be an integer"),
    ("mgno", {"smoothing": [1, 1, 1, 1, 1, 2.5]}, "every entry of smoothing"),
    ("mgno", {"levels": True}, "levels must be an integer >= 1, got True"),
    ("mgno", {"residual_restriction": "yes"}, "residual_restriction must be True or False"),
    ("deeponet", {"sensors": 0}, r"sensors \(points per axis\) must be an integer >= 2"),
    ("deeponet", {"sensors": 2.5}, "sensors .* got 2.5"),
    ("deeponet", {"pod_modes": 2, "pod_shape": -4}, "pod_shape must be an integer >= 1"),
    ("deeponet", {"pod_modes": 2, "pod_shape": 0}, "pod_shape must be an integer >= 1"),
    # (a TypeError from the comparison, a TypeError deep in the constructor, True taken)
    ("mgtfno", {"padding_fraction": "0.1"}, "padding_fraction must be a number in"),
    ("mgtfno", {"padding_fraction": None}, "padding_fraction must be a number in"),
    ("mgtfno", {"rank": "0.1"}, r"rank must be a number in \(0, 1\], got '0.1'"),
    ("mgtfno", {"levels": True}, "levels must be an integer >= 0, got True"),
    ("deeponet", {"branch_layers": 128}, r"branch_layers must be a list of layer widths, "
                                         r"e.g. \[128, 128\], got 128"),
    ("deeponet", {"trunk_layers": [64, 0]}, "trunk_layers must be a positive integer"),
])
def test_bad_sizes_and_options_are_refused_by_name(name, kwargs, message):
    with pytest.raises(OperatorConfigError, match=message):
        operators.build(name, **kwargs)


@pytest.mark.parametrize(("name", "kwargs"), [("fno", {"n_layers": 0}),
                                              ("lsm", {"heads": 0}),
                                              ("mgno", {"channels": 0})])
def test_a_class_constructed_directly_checks_its_sizes_as_build_does(name, kwargs):
    # (FNO(n_layers=0) built; LSM(heads=0) divided by zero)
    with pytest.raises(OperatorConfigError, match=f"{next(iter(kwargs))} must be a positive"):
        operators.get(name)(**kwargs)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim,sizes", [(1, (32, 64, 85)), (2, (32, 64, 45))])
def test_default_model_maps_grid_to_grid_at_several_resolutions(name, dim, sizes):
    model = operators.build(name, in_channels=2, out_channels=3, dim=dim).eval()
    for n in sizes:
        x = torch.randn(2, 2, *([n] * dim))
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, 3, *([n] * dim))
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_non_square_grid(name):
    model = operators.build(name, dim=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 48, 40)).shape == (1, 1, 48, 40)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [1, 2])
def test_rebuild_from_config_gives_identical_forward(name, dim):
    model = operators.build(name, in_channels=2, out_channels=2, dim=dim).eval()
    config = json.loads(json.dumps(model.config))  # what a checkpoint stores
    assert config["in_channels"] == 2 and config["dim"] == dim
    rebuilt = operators.build(model.name, **config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(3, 2, *([32] * dim))
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert rebuilt.config == model.config


@pytest.mark.parametrize("name", NAMES)
def test_float64_forward_matches_float32(name):
    model = operators.build(name, dim=2).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        y32 = model(x)
        y64 = model.double()(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y32, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_batch_and_single_sample_agree(name):
    model = operators.build(name, dim=2).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channels_names_expected_and_given_shapes(name):
    model = operators.build(name, in_channels=2, dim=2)
    with pytest.raises(OperatorInputError) as info:
        model(torch.randn(4, 3, 32, 32))
    message = str(info.value)
    assert "2 input channel" in message and "(4, 3, 32, 32)" in message
    assert isinstance(info.value, PdeforgeError)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_number_of_dimensions_is_explained(name):
    model = operators.build(name, dim=2)
    with pytest.raises(
        OperatorInputError, match=r"expects input of shape \(batch, 1, n, n\).*\(32, 32\)"
    ):
        model(torch.randn(32, 32))
    with pytest.raises(OperatorInputError, match="floating-point"):
        model(torch.ones(1, 1, 32, 32, dtype=torch.int64))


@pytest.mark.parametrize("name", NAMES)
def test_not_a_tensor_and_dtype_mismatch_are_explained(name):
    model = operators.build(name, dim=2)
    with pytest.raises(OperatorInputError, match="expects a torch.Tensor"):
        model([[0.0]])
    with pytest.raises(OperatorInputError, match=r"float32 weights but the input is torch.float64"):
        model(torch.randn(1, 1, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_bad_constructor_arguments(name):
    with pytest.raises(OperatorConfigError, match="dim"):
        operators.build(name, dim=4)
    if name != "fno":  # the one operator of 3D data is named as the fix
        with pytest.raises(OperatorConfigError, match="for 3D data use fno"):
            operators.build(name, dim=3)
    with pytest.raises(OperatorConfigError, match="in_channels"):
        operators.build(name, in_channels=0)
    with pytest.raises(OperatorConfigError, match="unexpected keyword"):
        operators.build(name, not_an_option=1)


@pytest.mark.parametrize("name", NAMES)
def test_to_a_dtype_keeps_the_spectral_weights(name):
    """model.to(torch.float64) is model.double(): torch's own ``to`` would cast complex
    weights to float64, dropping their imaginary parts."""
    model = operators.build(name, dim=2).eval()
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(x)
        torch.testing.assert_close(copy.deepcopy(model).to(torch.float64)(x), expected,
                                   rtol=0, atol=0)
        torch.testing.assert_close(copy.deepcopy(model).to("cpu", dtype=torch.float64)(x),
                                   expected, rtol=0, atol=0)
        inside = nn.Sequential(copy.deepcopy(model)).to(torch.float64)  # a parent's to()
        torch.testing.assert_close(inside(x), expected, rtol=0, atol=0)
        back = copy.deepcopy(model).to(torch.float64).to(torch.float32)
        torch.testing.assert_close(back(x.float()), model(x.float()), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("mgno", {"levels": 3.0, "channels": 8.0, "n_layers": 2.0}),
    ("fno", {"hidden_channels": 8.0, "n_modes": [8.0, 8.0]}),
    ("mgtfno", {"levels": 1.0, "hidden_channels": 8.0}),
    ("lsm", {"width": 16.0}),
    ("deeponet", {"basis": 16.0}),
])
def test_integral_floats_are_taken_as_integers(name, kwargs):
    """Sizes from a JSON or YAML sweep (64.0) build the model and are recorded as ints."""
    model = operators.build(name, **kwargs)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    for key, value in kwargs.items():
        assert model.config[key] == (
            [int(v) for v in value] if isinstance(value, list) else int(value))
    with pytest.raises(OperatorConfigError, match="positive integer"):
        operators.build(name, **{key: 2.5})


@pytest.mark.parametrize("name", NAMES)
def test_numpy_numbers_are_recorded_as_python_numbers(name):
    """Sizes from a numpy sweep build the model and round-trip through JSON."""
    model = operators.build(name, dim=2, in_channels=np.int64(2))
    assert type(model.config["in_channels"]) is int
    rebuilt = operators.build(name, **json.loads(json.dumps(model.config)))
    assert rebuilt.config == model.config


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [1, 2])
def test_empty_batch_gives_an_empty_output(name, dim):
    model = operators.build(name, dim=dim, out_channels=3).eval()
    shape = (0, 1, *([33] * dim))
    with torch.no_grad():
        assert model(torch.zeros(shape)).shape == (0, 3, *shape[2:])


@pytest.mark.parametrize("name", ["fno", "mgtfno"])
def test_half_precision_advice_of_fft_models_is_one_that_works(name):
    model = operators.build(name, dim=2)
    with pytest.raises(OperatorInputError, match="torch.autocast") as info:
        model(torch.randn(1, 1, 32, 32, dtype=torch.float16))
    assert "model.to(torch.float16)" not in str(info.value)
    with warnings.catch_warnings():  # torch: "ComplexHalf support is experimental"
        warnings.simplefilter("ignore", UserWarning)
        model.to(torch.float16)
    with pytest.raises(OperatorInputError, match="no half precision on a CPU"):
        model(torch.randn(1, 1, 32, 32, dtype=torch.float16))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the advice given works
        assert operators.build(name, dim=2)(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_loads_with_weights_only(name, tmp_path):
    model = operators.build(name, dim=2)
    path = tmp_path / "weights.pt"
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    rebuilt = operators.build(name, **saved["config"])
    rebuilt.load_state_dict(saved["state_dict"])


@pytest.mark.parametrize("name, kwargs, convention", [
    ("fno", {"n_modes": 4, "hidden_channels": 4, "n_layers": 1}, "periodic"),
    ("lsm", {"width": 8, "n_stages": 2, "heads": 2, "patch_size": 2}, "endpoints"),
    ("fno", {"n_modes": 4, "hidden_channels": 4, "n_layers": 1,
             "positional_embedding": None}, None),
    ("mgtfno", {"n_modes": 4, "hidden_channels": 4, "n_layers": 1}, None),
    ("mgno", {}, None),
])
@pytest.mark.parametrize("shape", [(16, 16), (13, 20)])
def test_positions_given_as_the_default_change_nothing(name, kwargs, convention, shape):
    """``positions`` names the convention of the positions an operator appends; given
    in that convention they reproduce its own output, and other positions change it."""
    torch.manual_seed(0)
    model = operators.build(name, **kwargs).eval()
    assert model.positions == convention
    if convention is None:
        return
    x = torch.randn(2, 1, *shape)
    axes = [torch.linspace(0, 1, n) if convention == "endpoints" else torch.arange(n) / n
            for n in shape]
    with torch.no_grad():
        plain = model(x)
        torch.testing.assert_close(model(x, coordinates=axes), plain, rtol=0, atol=1e-6)
        moved = model(x, coordinates=[axes[0] + 0.05, axes[1]])
        assert torch.equal(model(x), plain)  # nothing kept from the call before
    assert (moved - plain).abs().max() > 1e-5
    with pytest.raises(OperatorInputError, match="sizes"):
        model(x, coordinates=axes[:1])


def test_coordinates_for_an_fno_without_positions_are_refused():
    model = operators.build("fno", n_modes=4, hidden_channels=4, n_layers=1,
                            positional_embedding=None)
    with pytest.raises(OperatorInputError, match="without positional_embedding"):
        model(torch.randn(1, 1, 8, 8), coordinates=[torch.zeros(8), torch.zeros(8)])
