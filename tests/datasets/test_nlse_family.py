"""The `nlse` dataset family: format, shapes, conservation diagnostics, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from pdeforge.datasets.check import check_file
from pdeforge.datasets.problems import build_problem
from pdeforge.datasets.problems.nlse import PROGRESS_PIECE
from pdeforge.datasets.readers import open_dataset
from pdeforge.datasets.runner import generate
from pdeforge.datasets.torch_dataset import TorchDataset
from pdeforge.errors import PdeforgeError
from pdeforge.solvers import nlse

OPTIONS = {"t_end": 1.0, "n_times": 5, "length": 30.0, "eta_max": 1.5}


def test_generated_file_holds_trajectories_and_small_drifts(tmp_path):
    path = tmp_path / "nlse.nc"
    generate("nlse", 6, path, resolution=128, seed=2, options=OPTIONS, progress=False)
    assert check_file(path).ok
    with open_dataset(path) as ds:
        assert ds.psi_re.dims == ("sample", "t", "x") and ds.psi_re.shape == (6, 5, 128)
        assert ds.psi0_re.attrs["role"] == "input" and ds.psi_im.attrs["role"] == "output"
        assert bool(ds.converged.all())
        psi = ds.psi_re.values + 1j * ds.psi_im.values
        # the stored trajectory starts at the stored initial field
        np.testing.assert_allclose(psi[:, 0], ds.psi0_re.values + 1j * ds.psi0_im.values, atol=1e-6)
        assert float(ds.mass_drift.max()) < 1e-9  # dealiased, band-limited: conserved
        inv = nlse.invariants(psi.astype(np.complex128), length=30.0)
        np.testing.assert_allclose(inv["mass"][:, -1], inv["mass"][:, 0], rtol=1e-5)
    x, y = TorchDataset(path)[0]
    assert x.shape == (2, 128) and y.shape == (2 * 5, 128)


def test_initial_conditions_depend_on_seed_and_index_only():
    p = build_problem("nlse", 64, **OPTIONS)
    np.testing.assert_array_equal(p.initial_condition(3, 7), p.initial_condition(3, 7))
    assert not np.allclose(p.initial_condition(3, 7), p.initial_condition(3, 8))
    smooth = build_problem("nlse", 64, initial="smooth", **OPTIONS).initial_condition(0, 0)
    assert abs(np.abs(smooth).max() - 1.5) < 0.2


def _resolved_reference(problem, psi0: np.ndarray, factor: int = 8) -> np.ndarray:
    """The trajectories of psi0 (n, M) on a grid ``factor`` times finer, unmasked and
    tight, at the stored grid's points: the converged solution to compare with."""
    n, m = psi0.shape
    coef = np.fft.fft(psi0, axis=-1)
    padded = np.zeros((n, factor * m), dtype=np.complex128)
    padded[:, : m // 2], padded[:, -m // 2 :] = coef[:, : m // 2], coef[:, -m // 2 :]
    fine = np.fft.ifft(padded, axis=-1) * factor
    out = nlse.solve(fine, length=problem.config["length"], times=problem.times(), rtol=1e-11,
                     atol=1e-13, dealias=False, filter_strength=None)
    return out[..., ::factor]


def test_focusing_fields_are_solved_on_a_grid_that_resolves_them():
    """A smooth focusing field sharpens past what 128 points resolve: solved on the stored
    grid its trajectory is 10-20 % off the converged one and is stored as not converged;
    oversample=auto solves it on a finer grid, within ~resolution_tol of the converged
    solution (measured 5.6e-10 - 1.2e-9 at tol 1e-8), drifts of the solved field tiny."""
    opts = dict(t_end=1.0, n_times=5, length=30.0, eta_max=2.0, initial="smooth")
    coarse = build_problem("nlse", 128, oversample="1", **opts).generate(0, [0, 1])
    assert not coarse["converged"].any() and (coarse["spectral_tail"] > 1e-3).all()
    problem = build_problem("nlse", 128, **opts)
    out = problem.generate(0, [0, 1])
    psi0 = out["psi0_re"] + 1j * out["psi0_im"]
    np.testing.assert_array_equal(psi0, coarse["psi0_re"] + 1j * coarse["psi0_im"])
    assert out["converged"].all() and (out["oversample"] > 1).all()
    assert (out["spectral_tail"] <= 1e-8).all()
    ref = _resolved_reference(problem, psi0)
    err = np.abs(out["psi_re"] + 1j * out["psi_im"] - ref).max(axis=(1, 2))
    assert (err < 1e-8 * np.abs(ref).max()).all(), err
    bad = np.abs(coarse["psi_re"] + 1j * coarse["psi_im"] - ref).max(axis=(1, 2))
    assert (bad > 1e-2 * np.abs(ref).max()).all(), bad
    assert out["mass_drift"].max() < 1e-11 and out["momentum_drift"].max() < 1e-10


def test_a_sample_unresolved_at_the_largest_oversampling_is_not_converged():
    opts = dict(t_end=1.0, n_times=5, length=30.0, eta_max=2.0, initial="smooth")
    out = build_problem("nlse", 64, **opts).generate(0, [0])
    assert out["oversample"][0] == 8 and out["spectral_tail"][0] > 1e-8
    assert not out["converged"][0]


@pytest.mark.parametrize("m", [16, 17, 33])
def test_the_finer_grid_holds_the_trigonometric_interpolant(m):
    """Oversampling starts from psi0's Fourier series zero-padded: exact for a band-limited
    field at every fine point, odd and even M alike (for odd M the mode (M-1)/2 is a
    positive wavenumber, not the fine grid's -(M+1)/2)."""
    from pdeforge.datasets.problems.nlse import _interpolate

    x = np.linspace(0, 2 * np.pi, m, endpoint=False)
    fine = np.linspace(0, 2 * np.pi, 4 * m, endpoint=False)
    top = (m - 1) // 2
    field = lambda x: np.exp(1j * top * x) + 0.5 * np.cos(3 * x)  # noqa: E731
    np.testing.assert_allclose(_interpolate(field(x)[None], 4)[0], field(fine), atol=1e-13)


def test_options_that_would_defeat_the_resolution_check_are_refused():
    from pdeforge.errors import PdeforgeError

    with pytest.raises(PdeforgeError, match="--filter with --oversample auto"):
        build_problem("nlse", 64, filter=True)
    with pytest.raises(PdeforgeError, match="above 32768: choose a smaller"):
        build_problem("nlse", 8192, oversample="8")
    # lengths no grid resolves, or double precision cannot square (an OverflowError
    # traceback at --length 1e300)
    with pytest.raises(PdeforgeError, match=r"--length 1e\+06: even the finest grid "
                                            r"\(32768 points.*1 / --eta-min = 2"):
        build_problem("nlse", 64, length=1e6, eta_min=0.5)
    build_problem("nlse", 64, length=1e6, initial="smooth")  # smooth fields: any scale
    with pytest.raises(PdeforgeError, match="beyond what double precision squares"):
        build_problem("nlse", 64, length=1e300, initial="smooth")
    problem = build_problem("nlse", 64, filter=True, oversample="2", t_end=0.2, n_times=3)
    out = problem.generate(0, [0, 1])
    assert np.isnan(out["spectral_tail"]).all() and (out["oversample"] == 2).all()
    # a failed (NaN) trajectory is not "resolved": its tail is NaN, a zero field's is 0
    psi = np.zeros((2, 3, 64), complex)
    psi[1, 2, 5] = np.nan
    tail = build_problem("nlse", 64)._spectral_tail(psi)
    assert tail[0] == 0 and np.isnan(tail[1])
    # and its drifts are NaN while the others' are measured (invariants' own refusal of a
    # NaN field stopped the whole shard)
    from pdeforge.datasets.problems.nlse import _drifts

    x = nlse.grid(64, 20.0)
    psi = np.stack([np.stack([nlse.soliton(x, t, eta=1.0) for t in (0.0, 0.1, 0.2)])] * 2)
    psi[1, 2, 5] = np.nan
    drifts = _drifts(psi, 20.0, True)
    assert all(np.isnan(v[1]) and v[0] < 1e-12 for v in drifts.values()), drifts


def test_the_next_factor_follows_the_spectrum_s_decay():
    """tail(F') = tail(F)^(F'/F) for an exponentially decaying spectrum: measured tails at
    M = 512 of 3.5e-3 (smooth field) and 3.5e-7 (soliton) at F = 1 call for 4 and 2."""
    from pdeforge.datasets.problems.nlse import _next_factor

    ladder = [1, 2, 4, 8]
    assert _next_factor(3.5e-3, 1, ladder, 1e-8) == 4
    assert _next_factor(3.5e-7, 1, ladder, 1e-8) == 2
    assert _next_factor(0.5, 1, ladder, 1e-8) == 8  # no F predicted to do: the largest
    assert _next_factor(np.nan, 1, ladder, 1e-8) == 2  # nothing to extrapolate: next rung
    assert _next_factor(1e-5, 8, ladder, 1e-8) == 0  # the ladder's end: left unresolved


def test_soliton_initial_conditions_are_periodic():
    # each soliton wrapped onto the domain: its cut lies L/2 from its centre. Unwrapped,
    # a wide soliton (eta 0.5) placed at x0 = L/4 jumped by up to 1.9e-3 across x = L/2,
    # and the band's outer tenth held up to 3.6e-5 of the peak coefficient (2.8e-7 now)
    prob = build_problem("nlse", 256, initial="solitons", eta_min=0.5, eta_max=0.6, noise=0.0)
    k = nlse.wavenumbers(256, prob.config["length"])
    band = np.abs(k) <= nlse.DEALIAS_FRACTION * np.abs(k).max()
    outer = band & (np.abs(k) >= 0.9 * np.abs(k[band]).max())
    for i in range(40):
        c = np.abs(np.fft.fft(prob.initial_condition(0, i)))
        assert c[outer].max() <= 2e-6 * c.max(), i


def test_solve_inputs_reproduces_the_stored_trajectories():
    # what Surrogate.compare runs (it raised AttributeError for nlse)
    prob = build_problem("nlse", 64, **OPTIONS)
    data = prob.generate(0, range(3))
    again = prob.solve_inputs({"psi0_re": data["psi0_re"], "psi0_im": data["psi0_im"]})
    for name in ("psi_re", "psi_im", "converged", "oversample"):
        np.testing.assert_array_equal(again[name], data[name], err_msg=name)
    with pytest.raises(PdeforgeError, match=r"shape \(n, 64\)"):
        prob.solve_inputs({"psi0_re": data["psi0_re"][:, :32], "psi0_im": data["psi0_im"]})
    with pytest.raises(PdeforgeError, match="missing \\['psi0_im'\\]"):
        prob.solve_inputs({"psi0_re": data["psi0_re"]})


def test_the_warning_about_unresolved_samples_says_why_and_what_to_change(tmp_path):
    path = tmp_path / "coarse.nc"
    with pytest.warns(UserWarning, match=r"did not converge .*spectral_tail > "
                      r"--resolution-tol.*try --oversample auto.*raise --resolution"):
        generate("nlse", 2, path, resolution=16, seed=0, progress=False,
                 options={**OPTIONS, "eta_max": 3.0, "eta_min": 2.5, "initial": "solitons"})


def test_a_shard_reports_progress_while_its_samples_advance_together():
    # the bar sat at 0 for the whole shard (minutes at the default shard size)
    steps: list[float] = []
    prob = build_problem("nlse", 64, **OPTIONS)
    prob.generate(0, range(3), progress=steps.append)
    assert len(steps) > 10 and all(s > 0 for s in steps)
    assert sum(steps) == pytest.approx(3.0, abs=1e-12)
    assert sum(steps[: len(steps) // 2]) < 3.0  # reported along the way, not at the end
    # in pieces of at least PROGRESS_PIECE of the shard (the last may be smaller): the
    # solver's first accepted steps, each a sliver of the work after the start-up, made
    # tqdm's first estimate read hours
    assert min(steps[:-1]) >= PROGRESS_PIECE * 3 - 1e-12


@pytest.mark.parametrize("m", [32, 96])
def test_the_scipy_method_generates_the_same_trajectories(tmp_path, m):
    """--method scipy-dop853 (the reference approach, one trajectory at a time) against
    the default batched integrator: the same samples to the tolerances' accuracy, the
    same grid factors, and the file names the integrator that made it."""
    opts = dict(OPTIONS, rtol=1e-10, atol=1e-12)
    fast = build_problem("nlse", m, **opts).generate(1, range(3))
    ref_problem = build_problem("nlse", m, method="scipy-dop853", **opts)
    ref = ref_problem.generate(1, range(3))
    assert fast["converged"].any()
    for name in ("converged", "oversample"):
        np.testing.assert_array_equal(ref[name], fast[name], err_msg=name)
    peak = np.abs(fast["psi_re"] + 1j * fast["psi_im"]).max()
    for name in ("psi_re", "psi_im"):
        np.testing.assert_allclose(ref[name], fast[name], rtol=0, atol=1e-7 * peak)
    assert "method=scipy-dop853" in ref_problem.solver_name
    with pytest.raises(PdeforgeError, match="ip-dop853"):
        build_problem("nlse", m, method="rk4", **opts)


def test_energy_drift_is_relative_to_the_energy_terms_not_to_a_vanishing_energy():
    """A focusing soliton with v^2 = eta^2 / 3 has E = eta v^2 - eta^3 / 3 = 0 while its
    terms do not vanish: its drift is measured against their size (an energy scaled by
    1 + eps moves each term by at most 4 eps of it), not blown up by |E(0)|."""
    from pdeforge.datasets.problems.nlse import _drifts

    length, eps = 40.0, 1e-6
    x = nlse.grid(512, length)
    psi0 = nlse.soliton(x, 0.0, eta=1.5, velocity=1.5 / np.sqrt(3))
    energy = nlse.invariants(psi0, length=length)["energy"]
    scale = nlse.energy_scale(psi0, length=length)
    assert abs(energy) < 1e-9 * scale  # the terms cancel
    drift = _drifts(np.stack([psi0, psi0 * (1 + eps)])[None], length, True)["energy"][0]
    assert 0 < drift <= 4 * eps * (1 + eps) ** 3


def test_the_resolution_is_checked_between_sparse_output_times():
    """With 2 output times over t = 2, a focusing peak between them went unseen: F = 4 was
    taken as resolving, and the stored end state was 2.7e-6 off (relative) the one stored
    with 41 outputs (F = 8), against resolution_tol 1e-8 (a review's 16x finer solve
    agreed with the latter to 1e-10)."""
    sparse = build_problem("nlse", 256, t_end=2.0, n_times=2, initial="smooth")
    times, outputs = sparse.check_times()
    assert len(times) - 1 >= 32 and np.array_equal(times[outputs], sparse.times())
    dense = build_problem("nlse", 256, t_end=2.0, n_times=41, initial="smooth")
    assert np.array_equal(dense.check_times()[0], dense.times())  # enough outputs already
    a, b = sparse.generate(0, [0]), dense.generate(0, [0])
    assert a["converged"].all() and a["oversample"][0] == b["oversample"][0]
    end_a = a["psi_re"][0, -1] + 1j * a["psi_im"][0, -1]
    end_b = b["psi_re"][0, -1] + 1j * b["psi_im"][0, -1]
    assert np.abs(end_a - end_b).max() < 1e-9 * np.abs(end_b).max()
    assert a["psi_re"].shape == (1, 2, 256)
