"""The linear problem families: solver-independent data, physics checks, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from pdeforge.datasets.problems import build_problem
from pdeforge.datasets.runner import generate
from pdeforge.errors import PdeforgeError
from pdeforge.solvers.krylov import auto_choice

FAMILIES = {
    "darcy": {"coefficient": "lognormal"},
    "darcy3d": {},
    "helmholtz": {},
    "helmholtz3d": {},
    "advection-diffusion": {},
    "poisson": {},
    "thermal": {},
}
OUTPUT = {"darcy": ["solution"], "darcy3d": ["solution"], "helmholtz": ["solution_re",
          "solution_im"], "helmholtz3d": ["solution_re", "solution_im"],
          "advection-diffusion": ["solution"], "poisson": ["solution"],
          "thermal": ["temperature"]}


def _res(name):
    return {"darcy3d": 10, "helmholtz3d": 16, "helmholtz": 32}.get(name, 20)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_same_data_whichever_solver(name):
    rtol = 1e-9
    base = dict(FAMILIES[name], rtol=rtol)
    ref = build_problem(name, _res(name), solver="direct", **base).generate(0, range(5))
    for solver in ("skr", "gcrodr", "gmres"):
        pre = "none" if solver == "gmres" else "auto"
        out = build_problem(name, _res(name), solver=solver, preconditioner=pre,
                            **base).generate(0, range(5))
        assert out["converged"].all(), (solver, out["residual"])
        assert np.all(out["residual"] <= rtol * 1.001)
        for var in OUTPUT[name]:
            scale = np.abs(ref[var]).max()
            # forward error <= condition number x rtol; generous bound for these grids
            assert np.abs(out[var] - ref[var]).max() <= 1e5 * rtol * scale, (solver, var)
        assert (out["iterations"] > 0).all() and (ref["iterations"] == 0).all()


@pytest.mark.parametrize(("name", "resolved"), [("darcy", "amg"), ("helmholtz", "ilu"),
                                              ("advection-diffusion", "ilu")])
def test_preconditioner_auto_means_amg_for_spd_and_ilu_otherwise(name, resolved):
    # --preconditioner auto (the default) with an explicit iterative solver used to mean
    # no preconditioner: 144-210 products a Darcy sample against 10-11 with amg
    base = dict(FAMILIES[name], rtol=1e-8)
    auto = build_problem(name, _res(name), solver="skr", **base).generate(0, range(3))
    same = build_problem(name, _res(name), solver="skr", preconditioner=resolved,
                         **base).generate(0, range(3))
    np.testing.assert_array_equal(auto["iterations"], same["iterations"])
    assert auto["solver_used"] == same["solver_used"]
    assert auto["solver_used"].startswith("skr-") and auto["solver_used"].endswith(f"/{resolved}")
    assert auto["converged"].all()


def test_helmholtz_absorbing_is_complex_symmetric_and_solved():
    prob = build_problem("helmholtz", 32)
    s = prob.build(0, 0)
    assert np.iscomplexobj(s.A.data)
    assert abs(s.A - s.A.T).max() == 0  # reciprocity
    u = spla.spsolve(s.A.tocsc(), s.b)
    out = prob.generate(0, [0])
    np.testing.assert_allclose(out["solution_re"][0].ravel(), u.real, atol=1e-6 * abs(u).max())
    np.testing.assert_allclose(out["solution_im"][0].ravel(), u.imag, atol=1e-6 * abs(u).max())
    dirichlet = build_problem("helmholtz", 32, boundary="dirichlet").build(0, 0)
    assert not np.iscomplexobj(dirichlet.A.data)
    eigs = np.linalg.eigvalsh(dirichlet.A.toarray())
    assert eigs.min() < 0 < eigs.max()  # indefinite


@pytest.mark.parametrize(("name", "res", "options"), [
    ("helmholtz", 40, {}), ("helmholtz", 40, {"boundary": "dirichlet"}), ("helmholtz3d", 20, {}),
])
def test_helmholtz_solves_the_inputs_of_its_own_samples(name, res, options):
    """The reference solve behind Surrogate.compare: a sample's stored inputs give back
    the sample's solution; bad inputs are refused by name."""
    prob = build_problem(name, res, **options)
    out = prob.generate(3, [0, 1])
    samples = [prob.build(3, i) for i in (0, 1)]
    inputs = {k: np.stack([s.inputs[k] for s in samples]) for k in ("wavenumber", "source")}
    again = prob.solve_inputs(inputs)
    for key in [k for k in out if k.startswith("solution")]:
        scale = np.abs(out[key]).max()
        np.testing.assert_allclose(again[key], out[key], atol=1e-6 * scale)
    with pytest.raises(PdeforgeError, match="'wavenumber' and 'source'"):
        prob.solve_inputs({"wavenumber": inputs["wavenumber"]})
    with pytest.raises(PdeforgeError, match="shape"):
        prob.solve_inputs({k: v[:, :-1] for k, v in inputs.items()})


def test_advection_diffusion_conserves_mass():
    """div v = 0 and u = 0 on the walls: the source integral leaves through the walls."""
    n = 32
    prob = build_problem("advection-diffusion", n, solver="direct")
    out = prob.generate(1, [0])
    u, nu, h = out["solution"][0], float(out["diffusivity"][0]), 1.0 / n
    assert np.all(u > 0)
    wall_flux = nu * 2 * (u[0].sum() + u[-1].sum() + u[:, 0].sum() + u[:, -1].sum()) / h * h
    assert wall_flux == pytest.approx(1.0, rel=1e-8)  # integral of f = 1
    s = prob.build(1, 0)
    assert abs(s.A - s.A.T).max() > 0  # nonsymmetric


@pytest.mark.parametrize(("n", "velocity"), [(16, 50.0), (33, 7.5), (64, 200.0)])
def test_advection_diffusion_velocity_is_the_rms_speed_of_the_stored_flow(n, velocity):
    # revision 1 scaled the RMS of the face-normal components: speeds 1.43x --velocity
    out = build_problem("advection-diffusion", n, velocity=velocity).generate(3, range(3))
    speed = np.sqrt(np.mean(out["velocity_x"] ** 2 + out["velocity_y"] ** 2, axis=(1, 2)))
    np.testing.assert_allclose(speed, velocity, rtol=1e-6)  # (stored in float32)


@pytest.mark.parametrize("n", [10, 11, 12, 13, 19, 24, 32, 40, 101])
def test_thermal_slot_is_never_empty_and_keeps_its_size(n):
    # cells whose centres lay strictly inside x in (0.45, 0.55) gave no slot at n = 10 and
    # 1-4 columns (width 0.05-0.17) across 11-32
    slot = ~build_problem("thermal", n).plate()
    cols, rows = np.flatnonzero(slot.any(axis=1)), np.flatnonzero(slot.any(axis=0))
    assert slot.sum() == len(cols) * len(rows) > 0  # one rectangle
    for idx, (lo, hi) in ((cols, (0.45, 0.55)), (rows, (0.2, 0.8))):
        assert np.all(np.diff(idx) == 1)
        assert abs(len(idx) / n - (hi - lo)) <= 0.5 / n or len(idx) == 1
        centre = (idx[0] + idx[-1] + 1) / 2 / n
        assert abs(centre - (lo + hi) / 2) <= 0.5 / n + 1e-12


def test_thermal_energy_balance():
    """Steady state: heat in through the flux edges = heat out through the fixed edges."""
    n = 40
    prob = build_problem("thermal", n, solver="direct")
    out = prob.generate(2, [0])
    T, data, h = out["temperature"][0], out["boundary_data"][0], 1.0 / n
    plate = prob.plate()
    t_left, t_right = data[0, :], data[-1, :]
    q_bottom, q_top = data[5, 0], data[5, -1]
    out_left = (2 * (T[0, :] - t_left) / h * h).sum()
    out_right = (2 * (T[-1, :] - t_right) / h * h).sum()
    q_in = (q_bottom * plate[:, 0].sum() + q_top * plate[:, -1].sum()) * h
    assert out_left + out_right == pytest.approx(q_in, abs=1e-8 * (1 + abs(q_in)))
    assert np.all(T[~plate] == 0)
    # the geometry is stored: the slot is told from the plate's points at T = 0
    np.testing.assert_array_equal(out["plate"][0], plate.astype(float))
    assert 0 < out["plate"][0].mean() < 1


def test_poisson_boundary_data_are_imposed():
    """Refining the grid, the solution next to the walls converges to g there."""
    errs = []
    for n in (32, 64):
        prob = build_problem("poisson", n, solver="direct")
        out = prob.generate(3, [0])
        u, g = out["solution"][0], out["boundary_function"][0]
        errs.append(np.abs(u[0] - g[0]).max())
    assert errs[1] < 0.6 * errs[0]


def test_recycled_generation_is_identical_across_workers(tmp_path):
    kw = dict(resolution=16, seed=4, shard_size=3, progress=False,
              options={"solver": "skr", "preconditioner": "ilu"})
    one = generate("advection-diffusion", 7, tmp_path / "a.nc", workers=1, **kw)
    two = generate("advection-diffusion", 7, tmp_path / "b.nc", workers=2, **kw)
    from tests.datasets.test_runner import assert_same_dataset

    assert_same_dataset(one.path, two.path)


def test_auto_rule():
    assert auto_choice(True, 4096, 5.0) == ("direct", None)
    assert auto_choice(True, 128**2, 5.0) == ("skr", "amg")
    assert auto_choice(True, 512**2, 5.0, shared=True) == ("direct", None)
    assert auto_choice(True, 32**3, 7.0) == ("cg", "jacobi")
    assert auto_choice(True, 64**3, 7.0) == ("skr", "amg")
    assert auto_choice(True, 64**3, 7.0, shared=True) == ("skr", "amg")  # no LU in 3D
    assert auto_choice(False, 64**3, 7.0) == ("skr", "ilu0")
    assert auto_choice(False, 4096, 5.0) == ("direct", None)
    assert auto_choice(False, 128**2, 5.0) == ("direct", None)  # symmetric pattern
    assert auto_choice(False, 512**2, 5.0) == ("direct", None)
    assert auto_choice(False, 1024**2, 5.0) == ("gmres", "ilu")
    assert auto_choice(False, 128**2, 5.0, symmetric_pattern=False) == ("gmres", "ilu")
    assert auto_choice(False, 4096, 5.0, symmetric_pattern=False) == ("direct", None)
    assert auto_choice(False, 512**2, 5.0, symmetric=True) == ("direct", None)
    # the dimension, where stated, decides 2D or 3D; else the nonzeros a row
    assert auto_choice(True, 216, 6.0) == ("cg", "jacobi")  # 7-point over 6^3
    assert auto_choice(True, 216, 6.0, dim=2) == ("direct", None)
    assert auto_choice(True, 27, 5.0, dim=3) == ("cg", "jacobi")


def test_auto_treats_the_smallest_3d_grids_as_3d():
    # vertex darcy3d at resolution 8 has 6^3 unknowns, 6.0 nonzeros a row: auto took it
    # for 2D (a sparse LU) while resolution 9 got 3D's CG with Jacobi
    for n in (8, 9):
        out = build_problem("darcy3d", n, scheme="vertex").generate(0, range(2))
        assert out["solver_used"] == "cg/jacobi" and (out["iterations"] > 0).all(), n


@pytest.mark.parametrize(("name", "res", "label", "one_sided"),
                         [("darcy3d", 24, "cg", False),
                          ("advection-diffusion", 80, "direct", False),
                          ("advection-diffusion", 80, "gmres", True),
                          ("helmholtz3d", 16, "skr-gcrodr", False)])
def test_auto_strategies_solve_to_tolerance(name, res, label, one_sided):
    """``one_sided``: a small entry two cells downstream breaks the pattern's symmetry,
    which sends 2D nonsymmetric systems above 5k unknowns to GMRES + ILU."""
    import scipy.sparse as sp

    from pdeforge.solvers.krylov import solve_sequence

    prob = build_problem(name, res)
    samples = [prob.build(0, i) for i in range(3)]
    mats = [s.A for s in samples]
    if one_sided:
        n = mats[0].shape[0]
        mats = [sp.csr_matrix(A - sp.diags([0.01 * A.diagonal()[:-2]], [2], shape=(n, n)))
                for A in mats]
    # (the dimension stated, as the families do: the extra diagonal's 6 entries a row
    # would read as 3D)
    out = solve_sequence(mats, np.stack([s.b for s in samples]), method="auto", rtol=1e-8,
                         dim=prob.dim)
    assert out.method == label and out.converged.all()
    for A, s, x in zip(mats, samples, out.solutions, strict=True):
        assert np.linalg.norm(s.b - A @ x) <= 1e-8 * np.linalg.norm(s.b) * 1.001


def test_poisson_of_degree_zero_has_constant_data_and_a_negative_degree_is_refused():
    out = build_problem("poisson", 16, degree=0).generate(0, range(3))
    for name in ("source", "boundary_function"):
        field = out[name]
        assert np.ptp(field, axis=(1, 2)).max() == 0 and np.abs(field).min() > 0
    with pytest.raises(PdeforgeError, match="--degree must be >= 0, got -1"):
        build_problem("poisson", 16, degree=-1)
    # nor a series the grid cannot resolve (degree 100000 ran out of memory, a traceback)
    build_problem("poisson", 16, degree=15)
    with pytest.raises(PdeforgeError, match="--degree 16 at resolution 16: the grid "
                                            "resolves series of degree up to 15"):
        build_problem("poisson", 16, degree=16)
    build_problem("thermal", 10, temperature_degree=9)
    with pytest.raises(PdeforgeError, match="--temperature-degree 10 at resolution 10"):
        build_problem("thermal", 10, temperature_degree=10)


def test_too_few_points_per_wavelength_names_both_wave_number_options():
    # --k-sigma 50 was reported as "--k0 5 leaves 0.0 grid points ... use a smaller --k0"
    with pytest.raises(PdeforgeError, match=r"--k0 5 with --k-sigma 50 \(wave numbers up to "
                                            r"about k0 exp\(2 k_sigma\) = .*a smaller --k-sigma"):
        build_problem("helmholtz", 24, k0=5.0, k_sigma=50.0)
    with pytest.raises(PdeforgeError, match="leaves 3.0 grid points per wavelength"):
        build_problem("helmholtz", 24, k0=16 * np.pi, k_sigma=0.0)  # 2 pi / k0 * 24 = 3
    build_problem("helmholtz", 24, k0=7.9 * np.pi, k_sigma=0.0)  # 6.1 points: accepted


@pytest.mark.parametrize(("name", "n"), [("helmholtz", 32), ("helmholtz3d", 16)])
def test_a_source_narrower_than_the_grid_resolves_is_refused(name, n):
    with pytest.raises(PdeforgeError, match=r"--source-width 0.001 is below half the cell"):
        build_problem(name, n, source_width=0.001)
    # at half a cell the nearest cell centre always sees the source
    out = build_problem(name, n, source_width=0.5 / n, solver="direct").generate(0, range(4))
    assert (np.abs(out["source"]).reshape(4, -1).max(axis=1) > 0).all()


def test_unconverged_samples_of_a_direct_solve_are_not_told_to_raise_maxiter(tmp_path):
    # after a direct solve the advice was "raise --maxiter, choose another
    # --preconditioner, or --solver direct"
    with pytest.warns(UserWarning, match="2 of 2 samples did not converge") as said:
        generate("advection-diffusion", 2, tmp_path / "a.nc", resolution=12, progress=False,
                 options={"velocity": 1e30})
    text = " ".join(str(w.message) for w in said)
    assert "The sparse direct solve left a residual above --rtol" in text
    assert "--maxiter" not in text
    problem = build_problem("advection-diffusion", 12)
    assert "--maxiter" in problem.nonconverged_advice(["skr(gcrodr)"])


@pytest.mark.parametrize("solver", ["direct", "gmres", "skr"])
def test_a_sample_without_a_solution_is_stored_not_converged_and_the_others_solved(
        solver, tmp_path, monkeypatch):
    # extreme but accepted options (--velocity 1e37, --k-low 1e-300) made singular
    # matrices that aborted the whole run: "system 0: matrix is singular ... check the
    # assembly"
    import scipy.sparse as sp

    prob = build_problem("darcy", 12, solver=solver)
    samples = [prob.build(0, i) for i in range(4)]
    singular = sp.lil_matrix(samples[1].A)
    singular[5, :] = 0.0
    samples[1].A = sp.csr_matrix(singular)
    samples[2].A = sp.csr_matrix(samples[2].A * 0.0 + sp.eye(samples[2].A.shape[0]) * 0.0)
    from pdeforge.datasets.problems import linear

    solves: list[int] = []
    real = linear.solve_sequence

    def counted(*args, progress=None, **kwargs):  # systems solved, failed attempts too
        def count(k):
            solves.append(k)
            progress(k)
        return real(*args, progress=count, **kwargs)

    monkeypatch.setattr(linear, "solve_sequence", counted)
    steps: list[int] = []
    out = prob._solve(samples, steps.append)
    assert out["converged"].tolist() == [True, False, False, True]
    assert np.isnan(out["solution"][[1, 2]]).all() and np.isfinite(out["solution"][[0, 3]]).all()
    direct = sp.linalg.spsolve(sp.csc_matrix(samples[3].A), samples[3].b)
    assert np.allclose(out["solution"][3].ravel(), direct, rtol=1e-6, atol=1e-9 * abs(direct).max())
    assert sum(steps) == 4  # each sample once on the bar
    assert sum(solves) == 2  # the zero rows are found before any solve
    # a singular matrix without a zero row is found by its factorisation, after the
    # systems before it were solved: those are kept, not solved again
    if solver == "direct":
        samples = [prob.build(0, i) for i in range(4)]
        twin = sp.lil_matrix(samples[2].A)
        twin[5, :] = twin[6, :]
        samples[2].A = sp.csr_matrix(twin)
        solves.clear()
        out = prob._solve(samples, None)
        assert out["converged"].tolist() == [True, True, False, True]
        assert sum(solves) == 3
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="3 of 3 samples did not converge"):
        generate("advection-diffusion", 3, tmp_path / "a.nc", resolution=12, progress=False,
                 options={"velocity": 1e37, "solver": solver})


@pytest.mark.parametrize("problem, options, unused", [
    ("darcy", {"solver": "direct", "restart": 30, "maxiter": 50}, ["restart", "maxiter"]),
    ("poisson", {"solver": "gmres", "recycle": 5, "restart": 30}, ["recycle"]),
    ("darcy", {"coefficient": "lognormal", "k_high": 5.0}, ["k-high"]),
    ("darcy", {"coefficient": "piecewise", "k_high": 5.0, "solver": "skr"}, []),
    ("nlse", {"initial": "smooth", "eta_min": 0.7, "t_end": 0.05, "n_times": 2},
     ["eta-min"]),
])
def test_options_these_options_ignore_are_named_when_given(tmp_path, problem, options,
                                                           unused):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(problem, 2, tmp_path / "d.nc", resolution=16, options=options,
                 progress=False)
    said = [str(w.message) for w in caught if "is not used" in str(w.message)]
    assert [m.split()[0] for m in said] == [f"--{name}" for name in unused], said
    assert all("it is kept in the config" in m for m in said)


def test_a_filtered_nlse_run_says_its_resolution_is_not_measured(tmp_path):
    from pdeforge.datasets import open_dataset

    with pytest.warns(UserWarning, match=r"--filter: whether a sample is resolved on the grid "
                      r"\(--oversample 2\) is not measured"):
        out = generate("nlse", 2, tmp_path / "f.nc", resolution=32, progress=False,
                       options={"filter": True, "oversample": "2", "t_end": 0.05,
                                "n_times": 2}).path
    with open_dataset(out) as ds:
        assert "resolution not measured" in ds.attrs["solver"]
        assert "spectral tail <=" not in ds.attrs["solver"]


def test_samples_no_solver_could_start_on_get_advice_that_fits(tmp_path):
    """Zero rows in every system: no solve ran, and the advice was to raise --maxiter."""
    with pytest.warns(UserWarning, match="did not converge.*No solver ran: the samples' "
                      "systems admit no solve") as caught:
        generate("darcy", 2, tmp_path / "z.nc", resolution=16, progress=False,
                 options={"k_low": 1e-300, "k_high": 1e-300})
    assert not any("--maxiter" in str(w.message) for w in caught)
    # a direct solve takes any --restart (both are unused there, and warned about)
    with pytest.warns(UserWarning, match="--restart is not used with --solver direct"):
        generate("darcy", 2, tmp_path / "d.nc", resolution=8, progress=False,
                 options={"solver": "direct", "restart": 10})


def test_recycle_zero_turns_recycling_off_as_in_the_api(tmp_path):
    """--recycle 0 was refused ("must be > 0") while solve_sequence takes recycle=0."""
    from pdeforge.datasets import open_dataset

    generate("darcy", 3, tmp_path / "r.nc", resolution=12, progress=False,
             options={"solver": "gcrodr", "recycle": 0, "rtol": 1e-9})
    with open_dataset(tmp_path / "r.nc") as ds:
        assert bool(ds["converged"].all()) and float(ds["residual"].max()) <= 1e-9
    with pytest.raises(PdeforgeError, match=r"--recycle must be >= 0 \(0: no recycling\)"):
        generate("darcy", 3, tmp_path / "n.nc", resolution=12, progress=False,
                 options={"recycle": -1})


@pytest.mark.parametrize(("family", "slowed"), [
    ("advection-diffusion", "diffusion_matrix"),
    ("helmholtz", "GaussianRandomField.variance"),
])
def test_a_family_shared_by_threads_builds_while_another_sets_it_up(family, slowed,
                                                                    monkeypatch):
    """A Dask worker's threads ran one problem object: the second thread saw the first
    one's lazy set-up half done (AttributeError: no attribute '_lap') (review: 1 run in 5
    at 32^2 on a --nthreads 2 worker). The set-up is slowed here to make the overlap sure."""
    import threading
    import time

    from pdeforge.datasets.problems import build_problem, elliptic

    if slowed == "diffusion_matrix":
        original = elliptic.diffusion_matrix

        def slow(*args, **kwargs):
            time.sleep(0.3)
            return original(*args, **kwargs)

        monkeypatch.setattr(elliptic, "diffusion_matrix", slow)
    else:
        original = elliptic.GaussianRandomField.variance

        def slow(self, *args, **kwargs):
            time.sleep(0.3)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(elliptic.GaussianRandomField, "variance", slow)
    serial = build_problem(family, 32)
    expected = [serial.build(0, i).A.toarray() for i in range(2)]
    shared = build_problem(family, 32)
    out, errors = [None, None], []
    start = threading.Barrier(2)

    def build(i):
        start.wait()
        if i == 1:
            time.sleep(0.1)  # in the first thread's set-up
        try:
            out[i] = shared.build(0, i).A.toarray()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_each_thread_computes_shards_with_its_own_problem():
    """One problem object per thread (a Dask worker's threads shared one), the same one
    for every shard a thread computes."""
    import threading

    from pdeforge.datasets import runner

    _, config = runner.resolve_config("darcy", 4, resolution=8, seed=0, shard_size=2)
    text = runner.config_json(config)
    seen = []

    def take():
        seen.append(runner._cached_problem(text, config))
        seen.append(runner._cached_problem(text, config))

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[0] is seen[1] and seen[2] is seen[3] and seen[0] is not seen[2]
