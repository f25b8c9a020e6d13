"""NLSE solver: exact soliton, conservation, entropies, batching, scipy cross-check, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pdeforge.solvers import nlse

L = 50.0


@pytest.mark.slow
def test_soliton_matches_the_exact_solution_and_conserves_invariants():
    """Issue targets: eta=2, v=1, L=50, M=1024, filter on: error < 1e-9 at t=10, mass drift
    < 1e-13, energy drift < 1e-10 (relative)."""
    m = 1024
    x = nlse.grid(m, L)
    psi0 = nlse.soliton(x, 0.0, eta=2.0, velocity=1.0, x0=-5.0)
    psi = nlse.solve(psi0, length=L, times=[0.0, 5.0, 10.0], rtol=1e-10, atol=1e-12)
    assert np.array_equal(psi[0], psi0)
    exact = nlse.soliton(x, 10.0, eta=2.0, velocity=1.0, x0=-5.0)
    assert np.abs(psi[-1] - exact).max() < 1e-9
    inv = nlse.invariants(psi, length=L)
    # exact values: M = 2 eta, P = v M, E = eta v^2 - eta^3 / 3
    np.testing.assert_allclose(inv["mass"], 4.0, rtol=1e-12)
    np.testing.assert_allclose(inv["momentum"], 4.0, rtol=1e-12)
    np.testing.assert_allclose(inv["energy"], 2.0 - 8.0 / 3.0, rtol=1e-11)
    assert abs(inv["mass"][-1] - inv["mass"][0]) / inv["mass"][0] < 1e-13
    assert abs(inv["energy"][-1] - inv["energy"][0]) / abs(inv["energy"][0]) < 1e-10


def test_reference_entropies_of_the_single_soliton():
    x = nlse.grid(512, L)
    psi = 2.0 / np.cosh(2.0 * (x + 10.0)) * np.exp(1j * x)
    e = nlse.entropies(psi)
    assert round(float(e["shannon"]), 3) == 2.940
    assert round(float(e["renyi_2"]), 3) == 2.732
    assert round(float(e["tsallis_2"]), 3) == 0.935
    assert e["renyi_0"] >= e["shannon"] >= e["renyi_2"] >= e["renyi_inf"]
    # a half-precision field: computed in double, as invariants are (float16 arithmetic
    # dropped the tails: renyi_0 4.32 against 5.04 for |psi| of the same soliton)
    low = nlse.entropies(np.abs(psi).astype(np.float16))
    high = nlse.entropies(np.abs(psi).astype(np.float16).astype(np.float64))
    for key, value in high.items():
        assert low[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("m", [64, 128])
def test_batched_equals_one_by_one(m):
    x = nlse.grid(m, 20.0)
    rng = np.random.default_rng(0)
    batch = np.stack(
        [
            nlse.soliton(x, 0, eta=1 + 0.3 * i, velocity=0.5 - 0.2 * i, x0=-2 + i)
            + 0.01 * rng.standard_normal(m)
            for i in range(3)
        ]
    )
    times = [0.0, 0.5, 1.0]
    together = nlse.solve(batch, length=20.0, times=times, rtol=1e-12, atol=1e-14)
    alone = np.stack(
        [nlse.solve(b, length=20.0, times=times, rtol=1e-12, atol=1e-14) for b in batch]
    )
    assert together.shape == (3, 3, m)
    assert np.abs(together - alone).max() < 1e-12  # measured 8e-15 at M=128
    # several chunks: grouped by difficulty inside, returned in the input order
    chunked = nlse.solve(batch, length=20.0, times=times, rtol=1e-12, atol=1e-14, chunk_size=2)
    assert np.abs(chunked - alone).max() < 1e-12


def test_chunks_group_trajectories_by_difficulty():
    """Taller, narrower solitons need smaller steps: they are ranked harder, so a chunk of
    them does not hold back a chunk of easy ones (which then takes fewer steps)."""
    x = nlse.grid(128, 30.0)
    etas = [1.0, 3.0, 1.2, 2.6, 0.8, 2.8]
    batch = np.stack([nlse.soliton(x, 0, eta=e, velocity=0.3, x0=0.0) for e in etas])
    k = nlse.wavenumbers(128, 30.0)
    ctx = nlse._IPContext(k, np.ones(128), 1.0, torch.device("cpu"))
    hardness = nlse._difficulty(ctx, batch, 1e-9, 1e-11, True)
    assert list(np.argsort(hardness)) == list(np.argsort(etas))
    steps: dict[tuple, int] = {}  # chunk's amplitudes (= eta) -> accepted steps
    original = nlse._solve_ip_chunk

    def counting(ctx, flat, *args):
        calls = []
        args = list(args)
        args[5] = lambda _: calls.append(1)  # progress: once per accepted step
        out = original(ctx, flat, *args)
        steps[tuple(sorted(np.round(np.abs(flat).max(-1), 6)))] = len(calls)
        return out

    nlse._solve_ip_chunk = counting
    try:
        nlse.solve(batch, length=30.0, times=[0.0, 1.0], rtol=1e-9, atol=1e-11, chunk_size=3)
    finally:
        nlse._solve_ip_chunk = original
    hard, easy = (2.6, 2.8, 3.0), (0.8, 1.0, 1.2)
    assert set(steps) == {hard, easy}
    assert steps[hard] > 1.5 * steps[easy]  # measured 55 against 34


def test_chunks_run_in_parallel_and_equal_separate_solves(monkeypatch):
    """Chunks advance with their own step control (threads on a CPU): the result of a chunk
    is that of solving it alone, and the progress reaches 1 without going back, however
    often the main thread looks at the pool meanwhile (a poll every 0.1 ms here, so that
    the chunks report progress between polls however fast this machine is)."""
    m = 64
    x = nlse.grid(m, 20.0)
    batch = np.stack([nlse.soliton(x, 0, eta=1.0 + 0.5 * i, x0=-3 + 2 * i) for i in range(4)])
    times = [0.0, 0.5]
    seen: list[float] = []
    monkeypatch.setattr(nlse, "POOL_POLL_SECONDS", 1e-4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert nlse._chunking(4, m, torch.device("cpu"), 2) == (2, 2)
        chunked = nlse.solve(
            batch, length=20.0, times=times, rtol=1e-10, chunk_size=2, progress=seen.append
        )
    finally:
        torch.set_num_threads(threads)
    assert len(seen) > 10
    parts = [nlse.solve(batch[i : i + 2], length=20.0, times=times, rtol=1e-10) for i in (0, 2)]
    # same step control; only the summation order of the threaded products differs
    assert np.abs(chunked - np.concatenate(parts)).max() < 1e-11
    assert seen[-1] == pytest.approx(1.0) and bool(np.all(np.diff(seen) >= 0))
    with pytest.raises(nlse.NLSEInputError, match="chunk_size"):
        nlse.solve(batch, length=20.0, times=times, chunk_size=0)


@pytest.mark.parametrize(("n", "m", "t_end", "one_chunk"),
                         [(40, 64, 0.5, False), (64, 64, 0.5, False), (16, 4096, 0.05, True)])
def test_results_do_not_depend_on_the_thread_count(n, m, t_end, one_chunk):
    """1 and 2 threads (a Dask worker's process and the command line) give the same bits.
    Several chunks: the default cut of a CPU batch is set by its size and M alone, since a
    chunk's trajectories share one adaptive step. One chunk (run on all of torch's
    threads): its starting step, a mean over 16 x 4096 values, must not follow how torch
    splits the sum."""
    length = 50.0
    x = nlse.grid(m, length)
    rng = np.random.default_rng(3)
    batch = np.stack([
        nlse.soliton(x, 0, eta=rng.uniform(1.0, 2.0), x0=rng.uniform(-5, 5)) for _ in range(n)
    ])
    chunk = nlse._chunking(n, m, torch.device("cpu"), None)[0]
    assert (chunk == n) == one_chunk
    threads = torch.get_num_threads()
    results = []
    try:
        for k in (1, 2):
            torch.set_num_threads(k)
            results.append(nlse.solve(batch, length=length, times=[0.0, t_end], rtol=1e-9))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("how", ["raise in the first thread", "raise in the second thread",
                                 "signal to a worker thread", "signal to the process"])
def test_an_interrupt_stops_the_batch_at_once(how):
    """Ctrl-C, SIGTERM or a chunk's error must not wait for the chunks still running or
    queued. A chunk's error is raised whichever chunk fails (the chunk before it may
    still run: the two "raise" cases cover both threads). Python runs a signal's handler
    in the main thread only: a signal the kernel hands to a worker thread must reach it
    while it waits for the pool, as must one sent to the process (a terminal's Ctrl-C)."""
    import os
    import signal
    import threading

    m = 64
    x = nlse.grid(m, 20.0)
    batch = np.stack([nlse.soliton(x, 0, eta=1.0 + 0.1 * (i % 8)) for i in range(64)])
    seen, threads_seen = [], []
    trigger = 5

    def progress(fraction):
        seen.append(fraction)
        me = threading.get_ident()
        if me not in threads_seen:
            threads_seen.append(me)
        if how.startswith("raise"):
            target = 0 if "first" in how else 1
            if len(seen) >= 3 and threads_seen.index(me) == target:
                raise KeyboardInterrupt
        elif len(seen) == trigger:
            if how == "signal to a worker thread":
                signal.pthread_kill(me, signal.SIGINT)
            else:
                os.kill(os.getpid(), signal.SIGINT)
        if len(seen) >= trigger and not how.startswith("raise") and not gave_up:
            # the chunks wait until the main thread has run the handler (which a loaded
            # machine may delay): what is measured is the work done after it (a handler
            # that never runs is waited for once, then fails the assertion below)
            if not handled.wait(10):
                gave_up.append(True)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    handled, gave_up = threading.Event(), []

    def handler(signum, frame):  # Python's own, whatever the runner left, and a mark
        handled.set()
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        # 4 chunks of 16 on a pool of 2 threads
        assert nlse._chunking(64, m, torch.device("cpu"), None) == (16, 2)
        with pytest.raises(KeyboardInterrupt):
            nlse.solve(batch, length=20.0, times=[0.0, 20.0], rtol=1e-10, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
        torch.set_num_threads(threads)
    # the share of the batch's work done when it stopped: a whole chunk is 1/4
    assert max(seen) < 0.2, f"{len(seen)} steps, {max(seen):.2f} of the work"


def test_an_interrupt_while_chunks_are_queued_stops_the_started_ones(monkeypatch):
    """Ctrl-C while the main thread still queues chunks (here: at the second chunk, once
    the first one runs) stops the first at its next step (it was left to run to its end:
    the queueing was outside the code that tells the chunks to stop)."""
    import threading

    m = 64
    x = nlse.grid(m, 20.0)
    batch = np.stack([nlse.soliton(x, 0, eta=1.0 + 0.1 * (i % 8)) for i in range(64)])
    seen, started = [], threading.Event()

    def progress(fraction):
        seen.append(fraction)
        started.set()

    submit, calls = nlse.ThreadPoolExecutor.submit, []

    def interrupted_submit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            assert started.wait(30), "the first chunk never reported a step"
            raise KeyboardInterrupt
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(nlse.ThreadPoolExecutor, "submit", interrupted_submit)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert nlse._chunking(64, m, torch.device("cpu"), None) == (16, 2)
        with pytest.raises(KeyboardInterrupt):
            nlse.solve(batch, length=20.0, times=[0.0, 20.0], rtol=1e-10, progress=progress)
    finally:
        torch.set_num_threads(threads)
    # a whole chunk is 1/4 of the work
    assert len(calls) == 2 and max(seen) < 0.2, f"{len(seen)} steps, {max(seen):.2f} of the work"


@pytest.mark.parametrize("m", [384, 512])
def test_state_error_norm_follows_a_soliton_across_the_periodic_boundary(m):
    """A soliton with v = 3 (2 pi / L) crosses x = L/2 (eta L / 2 = 30: no tail at the
    antipode). The state norm (error relative to the field's size) stays on the wrapped
    exact solution in fewer steps than the componentwise norm."""
    length, v = 30.0, 3 * 2 * np.pi / 30.0
    x = nlse.grid(m, length)
    psi0 = nlse.soliton(x, 0.0, eta=2.0, velocity=v, x0=14.0, length=length)
    exact = nlse.soliton(x, 1.0, eta=2.0, velocity=v, x0=14.0, length=length)
    assert abs(exact[0]) > 0.1  # the exact solution now straddles the boundary
    steps = {}
    for norm in ("state", "componentwise"):
        count: list[float] = []
        psi = nlse.solve(
            psi0, length=length, times=[0.0, 1.0], rtol=1e-10, atol=1e-12, error_norm=norm,
            dealias=False, filter_strength=None, progress=count.append,
        )  # fmt: skip
        assert np.abs(psi[-1] - exact).max() < 1e-8  # measured 1.1e-9 .. 1.4e-9
        steps[norm] = len(count)
    assert steps["state"] < steps["componentwise"]
    with pytest.raises(nlse.NLSEInputError, match="error_norm"):
        nlse.solve(psi0, length=length, times=[0.0, 1.0], error_norm="max")


def test_interaction_picture_agrees_with_scipy_dop853():
    m = 128
    x = nlse.grid(m, 30.0)
    psi0 = nlse.soliton(x, 0, eta=1.5, velocity=0.3, x0=-3) + 0.2 * np.exp(-(x**2))
    times = [0.0, 1.0]
    ours = nlse.solve(psi0, length=30.0, times=times, rtol=1e-11, atol=1e-13)
    ref = nlse.solve(psi0, length=30.0, times=times, rtol=1e-11, atol=1e-13, method="scipy-dop853")
    assert np.abs(ours - ref).max() < 1e-8


def test_defocusing_sign_changes_the_energy():
    x = nlse.grid(64, 20.0)
    psi = np.exp(-(x**2))
    e_f = nlse.invariants(psi, length=20.0, focusing=True)["energy"]
    e_d = nlse.invariants(psi, length=20.0, focusing=False)["energy"]
    assert e_d > e_f


def test_bad_inputs():
    x = nlse.grid(64, L)
    good = np.exp(-(x**2)) + 0j
    with pytest.raises(nlse.NLSEInputError, match="at least 8"):
        nlse.solve(good[:4], length=L, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="NaN"):
        nlse.solve(np.full(64, np.nan), length=L, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="length"):
        nlse.solve(good, length=0.0, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="increasing"):
        nlse.solve(good, length=L, times=[0, 1, 1])
    with pytest.raises(nlse.NLSEInputError, match="method"):
        nlse.solve(good, length=L, times=[0, 1], method="euler")
    for rtol in (0.0, 5.0):  # a relative tolerance of 5 would accept any step
        with pytest.raises(nlse.NLSEInputError, match="0 < rtol < 1"):
            nlse.solve(good, length=L, times=[0, 1], rtol=rtol)


@pytest.mark.parametrize("method", ["ip-dop853", "scipy-dop853"])
def test_a_field_whose_nonlinear_term_overflows_is_refused_at_once(method):
    """1e110 exp(-x^2) is finite but |psi|^2 psi is not: every step came out NaN, and the
    solver spun at t = 0 for 391 s until max_steps, then said to loosen rtol (review)."""
    x = nlse.grid(64, 30.0)
    with pytest.raises(nlse.NLSEInputError, match=r"psi0 reaches \|psi\| = 1e\+110: the "
                                                  r"nonlinear term .* overflows"):
        nlse.solve(1e110 * np.exp(-(x**2)) + 0j, length=30.0, times=[0, 1], method=method)
    # a large field below the limit is solved (the equation's scaling, checked)
    a = 1e3
    small = nlse.solve(np.exp(-(x**2)) + 0j, length=30.0, times=[0, 0.1], rtol=1e-10,
                       atol=1e-12, dealias=False, filter_strength=0, method=method)
    # a psi(a x, a^2 t): the same values, a times larger, on a domain a times shorter
    big = nlse.solve(a * np.exp(-(x**2)) + 0j, length=30.0 / a, times=[0, 0.1 / a**2],
                     rtol=1e-10, atol=1e-9, dealias=False, filter_strength=0, method=method)
    np.testing.assert_allclose(big[-1] / a, small[-1], atol=1e-7)


def test_inputs_numpy_cannot_read_are_named():
    x = nlse.grid(16, L)
    with pytest.raises(nlse.NLSEInputError, match="psi0 must be an array of shape"):
        nlse.solve([np.ones(16), np.ones(15)], length=L, times=[0, 1])
    field = torch.tensor(np.exp(-(x**2)) + 0j, requires_grad=True)
    assert nlse.solve(field, length=L, times=[0, 0.1]).shape == (2, 16)
    with pytest.raises(nlse.NLSEInputError,
                       match=r"finite output times, got array\(\[ 0., +nan\]\)"):
        nlse.solve(np.exp(-(x**2)) + 0j, length=L, times=[0, float("nan")])


def test_more_bad_inputs_of_invariants_entropies_and_solve():
    x = nlse.grid(64, L)
    good = np.exp(-(x**2)) + 0j
    for length in (-50.0, 0.0, float("nan")):  # mass -4 and a ZeroDivisionError before
        with pytest.raises(nlse.NLSEInputError, match="length must be a positive number"):
            nlse.invariants(good, length=length)
    for focusing in ("False", 0.5, None):  # "False" counted as focusing
        with pytest.raises(nlse.NLSEInputError, match="focusing must be True .* or False"):
            nlse.solve(good, length=L, times=[0, 1], focusing=focusing)
        with pytest.raises(nlse.NLSEInputError, match="focusing must be True .* or False"):
            nlse.invariants(good, length=L, focusing=focusing)
    assert nlse.invariants(good, length=L, focusing=np.bool_(False))["energy"] > 0
    # a flag stored as 0/1 (netCDF) and a 0-d length are taken
    stored = nlse.invariants(good, length=np.array(L), focusing=np.int8(0))
    assert stored["energy"] == nlse.invariants(good, length=L, focusing=False)["energy"]
    with pytest.raises(nlse.NLSEInputError, match="focusing must be"):
        nlse.invariants(good, length=L, focusing=-1)  # ambiguous
    with pytest.raises(nlse.NLSEInputError, match="times must be real numbers"):
        nlse.solve(good, length=L, times=["a", "b"])
    with pytest.raises(nlse.NLSEInputError, match="times must be real numbers"):
        nlse.solve(good, length=L, times=[0, 1j])
    # numpy would cut complex times to their real part and read text and booleans
    for times in (np.array([0, 1 + 1j]), ["0", "1"], [False, True]):
        with pytest.raises(nlse.NLSEInputError, match="times must be real numbers"):
            nlse.solve(good, length=L, times=times)
    with pytest.raises(nlse.NLSEInputError, match=r"times\[2\] = 1.0 follows times\[1\] = 1.0"):
        nlse.solve(good, length=L, times=[0, 1, 1])
    np.testing.assert_array_equal(  # a torch tensor of times is taken
        nlse.solve(good, length=L, times=torch.tensor([0.0, 0.1], dtype=torch.float64)),
        nlse.solve(good, length=L, times=[0.0, 0.1]))
    with pytest.raises(nlse.NLSEInputError, match="numeric .* NoneType"):
        nlse.solve(None, length=L, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="numeric .* dtype bool"):  # a mask
        nlse.solve(np.abs(good) > 0.5, length=L, times=[0, 1])
    with pytest.raises(nlse.NLSEInputError, match="numeric .* dtype bool"):
        nlse.entropies(np.abs(good) > 0.5)
    with pytest.raises(nlse.NLSEInputError, match="rtol='1e-8'"):
        nlse.solve(good, length=L, times=[0, 1], rtol="1e-8")
    with pytest.raises(nlse.NLSEInputError, match="NaN or infinite"):
        nlse.entropies(np.where(np.arange(64) == 3, np.nan, good))


@pytest.mark.parametrize("offset", [1e9, -1e12])
def test_the_result_does_not_depend_on_when_the_times_start(offset):
    # the equation is autonomous: output times shifted by a large offset give the same
    # field (a clock kept at the offset plus the elapsed time lost the steps' low bits:
    # 6.5e-8 at 1e9, 2e-5 at 1e12 at rtol 1e-10); scipy's path agreed to 1e-12
    x = nlse.grid(32, 10.0)
    psi0 = np.exp(-(x**2)) * (1 + 0.2j)
    ts = np.linspace(0.0, 1.0, 5)
    kw = dict(length=10.0, rtol=1e-10, atol=1e-12)
    ref = nlse.solve(psi0, times=ts, **kw)
    shifted = nlse.solve(psi0, times=offset + ts, **kw)
    assert np.abs(shifted - ref).max() <= 1e-12


def test_entropies_of_a_zero_field_are_nan_and_the_others_unchanged():
    x = nlse.grid(64, L)
    fields = np.stack([np.zeros(64, complex), np.exp(-(x**2)) + 0j, np.ones(64, complex)])
    ent = nlse.entropies(fields)
    for name, value in ent.items():
        assert np.isnan(value[0]), name  # was 0, -inf, +inf, -2, 1: finite nonsense
        assert np.isfinite(value[1:]).all(), name
    assert ent["shannon"][2] == pytest.approx(np.log(64), rel=1e-14)  # uniform: ln M
    assert ent["renyi_2"][2] == pytest.approx(np.log(64), rel=1e-14)
    assert ent["spectral_shannon"][2] == pytest.approx(0.0, abs=1e-12)  # one mode
    # they do not depend on the field's scale: |psi|^2 overflowed at 1e200 and underflowed
    # (a "zero" field) at 1e-170
    for scale in (1e200, 1e-170):
        scaled = nlse.entropies(fields[1:] * scale)
        for name, value in scaled.items():
            np.testing.assert_allclose(value, ent[name][1:], rtol=1e-12, err_msg=name)


def test_the_soliton_case_exact_solution_follows_it_across_the_boundary():
    # v = 8 (2 pi / L) from x0 = 10 crosses x = L/2 near t = 2.5; the case's exact
    # solution was not wrapped (errors 2.0 against the solver after the crossing)
    v = 8 * 2 * np.pi / L
    case = nlse.cases.single_soliton(eta=2.0, velocity=v, x0=10.0, m=512, t_end=8.0,
                                     n_times=5)
    psi = nlse.solve(case.psi0, length=case.length, times=case.times, rtol=1e-10,
                     atol=1e-12, dealias=False, filter_strength=None)
    for i, t in enumerate(case.times):
        assert np.abs(psi[i] - case.exact(t, case.x)).max() < 1e-8, t
    # a velocity that is no multiple of 2 pi / L (the reference case's v = 1): the
    # soliton carries its phase across the boundary, where its tails vanish
    soliton = nlse.cases.single_soliton(eta=2.0, velocity=1.0, x0=20.0, m=512, t_end=10.0,
                                        n_times=3)
    psi = nlse.solve(soliton.psi0, length=soliton.length, times=soliton.times, rtol=1e-11,
                     atol=1e-13, dealias=False, filter_strength=None)
    late = soliton.exact(10.0, soliton.x)
    assert abs(soliton.x[np.argmax(np.abs(late))] + 20.0) < 0.1  # crossed: now at x = -20
    assert np.abs(psi[-1] - soliton.exact(10.0, soliton.x)).max() < 1e-8


@pytest.mark.slow
def test_two_soliton_collision_shifts_match_the_formula():
    case = nlse.cases.two_solitons()  # eta 1 and 1.2, v +1 and -1, from -20 and 20, L=200
    psi = nlse.solve(
        case.psi0, length=case.length, times=case.times[[0, -1]], rtol=1e-10, atol=1e-12
    )
    x, density, t = case.x, np.abs(psi[-1]) ** 2, case.times[-1]
    right = (x * density)[x > 0].sum() / density[x > 0].sum()
    left = (x * density)[x < 0].sum() / density[x < 0].sum()
    fast, slow = nlse.cases.collision_shifts(1.0, 1.2, 1.0, -1.0)
    assert abs((right - (-20.0 + t)) - fast) < 1e-3
    assert abs((left - (20.0 - t)) - slow) < 1e-3
    energy = nlse.invariants(psi, length=case.length)["energy"]
    assert abs(energy[1] - energy[0]) / abs(energy[0]) < 1e-9


def test_akhmediev_breather_stays_on_the_exact_solution():
    case = nlse.cases.akhmediev(a=0.25)  # from its exact form at t = -5
    psi = nlse.solve(case.psi0, length=case.length, times=case.times, rtol=1e-12, atol=1e-14)
    error = max(np.abs(psi[i] - case.exact(t, case.x)).max() for i, t in enumerate(case.times))
    assert error < 1e-7
    i0, j0 = np.argmin(np.abs(case.times)), np.argmin(np.abs(case.x))
    assert case.times[i0] == 0.0 and case.x[j0] == 0.0
    assert round(float(np.abs(psi[i0, j0]) ** 2), 4) == 5.8284


@pytest.mark.parametrize("amplitude", [1.0, 0.7])
def test_modulation_instability_grows_at_the_theoretical_rate(amplitude):
    case = nlse.cases.modulation_instability(amplitude=amplitude, t_end=10.0)  # K = sqrt(2) A
    psi = nlse.solve(case.psi0, length=case.length, times=case.times, rtol=1e-12, atol=1e-16)
    mode = np.abs(np.fft.fft(psi, axis=-1)[:, 1])  # the perturbed wavenumber
    i, j = np.searchsorted(case.times, 4.0), np.searchsorted(case.times, 10.0)
    measured = np.log(mode[j] / mode[i]) / (case.times[j] - case.times[i])
    theory = nlse.cases.mi_growth_rate(amplitude, np.sqrt(2) * amplitude)
    assert abs(measured - theory) / theory < 0.02


def _noisy_field(m: int, length: float, seed: int = 1) -> np.ndarray:
    x = nlse.grid(m, length)
    rng = np.random.default_rng(seed)
    return (
        1.2 * np.exp(-((x - 1) ** 2))
        + 0.8 * np.exp(-((x + 4) ** 2) / 2) * np.exp(0.7j * x)
        + 0.01 * (rng.standard_normal(m) + 1j * rng.standard_normal(m))
    )


UNMASKED = dict(dealias=False, filter_strength=None)


def _relative_drifts(psi: np.ndarray, length: float) -> dict[str, float]:
    inv = nlse.invariants(psi, length=length)
    return {k: float(np.max(np.abs(v - v[..., :1]) / np.abs(v[..., :1]))) for k, v in inv.items()}


@pytest.mark.parametrize("m", [96, 128])
def test_conserve_holds_mass_and_energy_without_biasing_the_solution(m):
    """Mass and energy are exact invariants of the unmasked collocation system: projecting
    onto them leaves a noisy field on the tightly integrated trajectory (measured 7.7e-11
    at M=128, as close as without projection) and holds both to round-off."""
    length, times = 20.0, np.linspace(0.0, 3.0, 7)
    psi0 = _noisy_field(m, length)
    tight = nlse.solve(psi0, length=length, times=times, rtol=1e-13, atol=1e-15, **UNMASKED)
    psi = nlse.solve(
        psi0, length=length, times=times, rtol=1e-8, atol=1e-10, conserve=True, **UNMASKED
    )
    assert np.abs(psi - tight).max() < 1e-9
    drift = _relative_drifts(psi, length)
    assert drift["mass"] < 1e-13 and drift["energy"] < 1e-13
    # the noise fills every mode: aliasing changes this field's momentum (4e-4 of it by
    # t = 3), so the grid system does not conserve it and imposing it is refused
    with (
        pytest.raises(nlse.NLSEInputError, match="momentum is not an invariant"),
        pytest.warns(RuntimeWarning, match="projection moved the state"),
    ):
        nlse.solve(
            psi0, length=length, times=times, rtol=1e-8, conserve=("mass", "momentum"),
            **UNMASKED,
        )  # fmt: skip


@pytest.mark.parametrize("m", [256, 384])
def test_conserving_mass_momentum_and_energy_cuts_a_soliton_error(m):
    """The phase and position errors of a soliton integrate the errors in its amplitude
    and velocity, which mass and momentum pin (measured at rtol 1e-7: 3.0e-6 against
    1.5e-5 without projection at M=256, 8.4e-6 against 2.8e-5 at M=384)."""
    length, times = 30.0, np.linspace(0.0, 10.0, 11)
    x = nlse.grid(m, length)
    params = dict(eta=2.0, velocity=0.5, x0=-3.0, length=length)
    psi0, exact = nlse.soliton(x, 0.0, **params), nlse.soliton(x, 10.0, **params)
    kw = dict(rtol=1e-7, atol=1e-9, error_norm="state", **UNMASKED)
    plain = nlse.solve(psi0, length=length, times=times, **kw)
    kept = nlse.solve(
        psi0, length=length, times=times, conserve=("mass", "momentum", "energy"), **kw
    )
    assert np.abs(kept[-1] - exact).max() < np.abs(plain[-1] - exact).max() / 2
    # near the soliton's fold (E at fixed M and P is smallest there) the projection may
    # stop short of round-off (see nlse._project): measured at M=384 4.8e-12, 1.3e-10 and
    # 3.3e-8 against 1.8e-7, 2.3e-7 and 1.4e-6 without; at M=256 2e-13, 3e-13, 7e-11
    drift, drift_plain = _relative_drifts(kept, length), _relative_drifts(plain, length)
    for name in ("mass", "momentum", "energy"):
        assert drift[name] < drift_plain[name] / 10
    assert drift["mass"] < 1e-9 and drift["momentum"] < 1e-8


def test_projection_restores_the_invariants_with_a_correction_the_size_of_the_drift():
    m, length = 128, 20.0
    k = nlse.wavenumbers(m, length)
    ctx = nlse._IPContext(k, np.ones(m), 1.0, torch.device("cpu"))
    y = torch.fft.fft(torch.as_tensor(_noisy_field(m, length)[None]), dim=-1)
    target = nlse._invariants_hat(ctx, y, gradients=False)[0]
    rng = np.random.default_rng(2)
    noise = torch.as_tensor(rng.standard_normal((1, m)) + 1j * rng.standard_normal((1, m)))
    drifted = y + 1e-9 * y.abs().max() * noise
    before = (nlse._invariants_hat(ctx, drifted, False)[0] - target).abs()
    projected = nlse._project(ctx, drifted, target, [0, 1, 2])
    after = (nlse._invariants_hat(ctx, projected, False)[0] - target).abs()
    assert bool((before > 1e-10).all())
    assert bool((after < 1e-13 * target.abs().clamp_min(1.0)).all())
    assert float((projected - drifted).abs().max()) < float((drifted - y).abs().max())


@pytest.mark.parametrize("focusing", [True, False])
def test_projection_on_degenerate_fields(focusing):
    """A plane wave (P = k M: dependent gradients) stays on its exact solution; psi = 0
    (no gradients) stays zero."""
    m, length, amplitude = 64, 20.0, 0.8
    x, k0, s = nlse.grid(m, length), 3 * 2 * np.pi / length, 1.0 if focusing else -1.0
    times = np.linspace(0.0, 5.0, 6)
    psi = nlse.solve(
        amplitude * np.exp(1j * k0 * x), length=length, times=times, rtol=1e-9,
        focusing=focusing, conserve=("mass", "momentum", "energy"), **UNMASKED,
    )  # fmt: skip
    omega = k0**2 / 2 - s * amplitude**2
    exact = amplitude * np.exp(1j * (k0 * x[None] - omega * times[:, None]))
    assert np.abs(psi - exact).max() < 1e-8  # measured 4.4e-9
    zero = nlse.solve(np.zeros(m), length=length, times=[0.0, 1.0], conserve=True, **UNMASKED)
    assert np.array_equal(zero, np.zeros((2, m)))


def test_conserve_bad_inputs():
    x = nlse.grid(64, L)
    good = np.exp(-(x**2)) + 0j
    with pytest.raises(nlse.NLSEInputError, match="dealias=False"):
        nlse.solve(good, length=L, times=[0, 1], conserve=True)  # default mask is on
    with pytest.raises(nlse.NLSEInputError, match="ip-dop853"):
        nlse.solve(good, length=L, times=[0, 1], conserve=True, method="scipy-dop853",
                   **UNMASKED)  # fmt: skip
    with pytest.raises(nlse.NLSEInputError, match="names from"):
        nlse.solve(good, length=L, times=[0, 1], conserve=("mass", "hamiltonian"), **UNMASKED)
    for bad in ("mass", 1, 0.5):
        with pytest.raises(nlse.NLSEInputError, match="names from"):
            nlse.solve(good, length=L, times=[0, 1], conserve=bad, **UNMASKED)
    assert nlse.solve(good, length=L, times=[0, 1], conserve=np.False_).shape == (2, 64)


def test_momentum_of_an_unresolved_soliton_is_refused():
    """eta = 2 on M = 128, L = 30: the spectrum at the Nyquist wavenumber is 3e-5 of its
    peak, aliasing moves the momentum, and imposing it is refused with a message that says
    so (mass and energy alone are fine)."""
    length = 30.0
    x = nlse.grid(128, length)
    psi0 = nlse.soliton(x, 0.0, eta=2.0, velocity=0.5, x0=-3.0, length=length)
    kw = dict(times=np.linspace(0.0, 10.0, 11), rtol=1e-7, atol=1e-9, error_norm="state")
    with pytest.raises(nlse.NLSEInputError, match="momentum is not an invariant"):
        nlse.solve(psi0, length=length, conserve=nlse.INVARIANTS, **kw, **UNMASKED)
    psi = nlse.solve(psi0, length=length, conserve=True, **kw, **UNMASKED)
    drift = _relative_drifts(psi, length)  # held to PROJECTION_RTOL (1e-12) of their sums
    assert drift["mass"] < 1e-11 and drift["energy"] < 1e-11  # measured 1.5e-14, 2.1e-13


def test_a_batch_projects_as_its_trajectories_would_one_by_one():
    """Each trajectory stops iterating once its own invariants hold: a standing soliton
    (energy at its fold) next to a moving one projects as it would alone."""
    m, length = 128, 20.0
    x, k = nlse.grid(m, length), nlse.wavenumbers(m, length)
    ctx = nlse._IPContext(k, np.ones(m), 1.0, torch.device("cpu"))
    fields = np.stack([nlse.soliton(x, 0.0, eta=1.5, x0=-2.0, length=length),
                       nlse.soliton(x, 0.0, eta=1.2, velocity=2 * k[1], x0=3.0, length=length),
                       _noisy_field(m, length)])  # fmt: skip
    y = torch.fft.fft(torch.as_tensor(fields), dim=-1)
    target = nlse._invariants_hat(ctx, y, gradients=False)[0]
    rng = np.random.default_rng(3)
    noise = torch.as_tensor(rng.standard_normal((3, m)) + 1j * rng.standard_normal((3, m)))
    size = torch.tensor([[1e-9], [1e-6], [1e-4]]) * y.abs().amax(-1, keepdim=True)
    drifted = y + size * noise  # drifts that take different numbers of iterations
    together = nlse._project(ctx, drifted, target, [0, 1, 2])
    for i in range(3):
        alone = nlse._project(ctx, drifted[i : i + 1], target[i : i + 1], [0, 1, 2])
        correction = float((alone - drifted[i : i + 1]).abs().max())
        # measured up to 1.5e-5 of the correction (round-off through the nearly singular
        # Gram matrix of the standing soliton); without the per-trajectory stop, 0.6
        assert float((together[i : i + 1] - alone).abs().max()) < 1e-3 * correction


def test_an_overflowing_step_is_rejected_not_accepted():
    """A first step far too large makes the stages overflow (NaN error estimate): the step
    must be rejected and retried, not accepted as error-free."""
    m, length = 128, 20.0
    x = nlse.grid(m, length)
    psi0 = nlse.soliton(x, 0.0, eta=3.0, length=length)
    psi = nlse.solve(psi0, length=length, times=[0.0, 1.0], rtol=1e-9, atol=1e-11,
                     first_step=5.0, **UNMASKED)  # fmt: skip
    assert np.all(np.isfinite(psi))
    usual = nlse.solve(psi0, length=length, times=[0.0, 1.0], rtol=1e-9, atol=1e-11, **UNMASKED)
    assert np.abs(psi[-1] - usual[-1]).max() < 1e-7


def test_more_bad_options_get_clear_errors():
    x = nlse.grid(32, 10.0)
    psi0 = nlse.soliton(x, 0.0)
    t = [0.0, 0.1]
    for kwargs, match in [
        (dict(atol=0.0), "0 < atol < inf"),
        (dict(atol=np.inf), "0 < atol < inf"),
        (dict(first_step=0.0), "first_step"),
        (dict(first_step=-0.1), "first_step"),
        (dict(chunk_size=2.5), "chunk_size"),
        (dict(filter_order=0), "filter_order"),
        (dict(filter_strength=-5.0), "filter_strength"),
        (dict(max_steps=0), "max_steps"),
        (dict(device="gpu"), "not a torch device"),
        (dict(dealias="False"), "dealias must be True"),  # a truthy string: it dealiased
    ]:
        with pytest.raises(nlse.NLSEInputError, match=match):
            nlse.solve(psi0, length=10.0, times=t, **kwargs)
    # settings read from a file (0-d arrays) are taken like the numbers they hold, every
    # one of them (length and focusing were, rtol and the step options were refused)
    settings = dict(rtol=1e-8, atol=1e-10, filter_strength=30.0, filter_order=20,
                    chunk_size=1, first_step=1e-3, max_step=0.05, max_steps=10_000,
                    length=10.0, focusing=True, dealias=False)
    read = {key: np.array(value) for key, value in settings.items()}
    np.testing.assert_array_equal(nlse.solve(psi0, times=t, **read),
                                  nlse.solve(psi0, times=t, **settings))
    with pytest.raises(nlse.NLSEInputError, match="length must be a positive number"):
        nlse.solve(psi0, length="10", times=t)
    assert nlse.solve(np.zeros((0, 32), complex), length=10.0, times=t).shape == (0, 2, 32)


@pytest.mark.parametrize("method", ["ip-dop853", "scipy-dop853"])
def test_first_output_is_psi0_exactly_and_progress_reaches_one(method):
    x = nlse.grid(32, 10.0)
    psi0 = np.stack([nlse.soliton(x, 0.0, eta=1.0), nlse.soliton(x, 0.0, eta=1.5)])
    for t in ([0.0, 0.2], [0.0]):
        seen: list[float] = []
        psi = nlse.solve(psi0, length=10.0, times=t, method=method, progress=seen.append)
        np.testing.assert_array_equal(psi[:, 0], psi0)
        assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


def test_imposing_momentum_that_the_grid_does_not_conserve_is_refused_over_the_run():
    """A moving soliton under-resolved at M = 150: aliasing changes its momentum by less
    than rtol between any two projections but more over the run, so holding it would
    bias the solution (measured 1.7e-9 against 7.9e-12 without): refused. At M = 170 the
    momentum holds, but the energy's gradient nearly depends on mass and momentum: its
    projections move the state 100s of rtol (raising the error from 4.4e-11 to 6.8e-8),
    and a warning says so."""
    length, t = 40.0, np.linspace(0.0, 10.0, 6)
    kw = dict(length=length, times=t, rtol=1e-9, atol=1e-12, **UNMASKED)
    x = nlse.grid(150, length)
    psi0 = nlse.soliton(x, 0.0, 1.2, 2 * np.pi / length * 3, length=length)
    with pytest.raises(nlse.NLSEInputError, match="momentum is not an invariant"):
        nlse.solve(psi0, conserve=("mass", "momentum"), **kw)
    x = nlse.grid(170, length)
    psi0 = nlse.soliton(x, 0.0, 1.2, 2 * np.pi / length * 3, length=length)
    with pytest.warns(RuntimeWarning, match="projection moved the state"):
        nlse.solve(psi0, conserve=("mass", "momentum", "energy"), **kw)


@pytest.mark.parametrize("m", [192, 256])
def test_outputs_denser_than_the_steps_are_interpolated_to_the_step_accuracy(m):
    """Output times closer than the step: the step is not cut to each of them (DOP853's
    dense output), the outputs agree with runs that end on them, the exact soliton and
    scipy's dense output; an output batch that also lands on its times (conserve) agrees."""
    length = 40.0
    x = nlse.grid(m, length)
    psi0 = np.stack([nlse.soliton(x, 0.0, eta=1.2, velocity=0.5, x0=-2.0, length=length),
                     nlse.soliton(x, 0.0, eta=0.9, velocity=-0.3, x0=4.0, length=length)])
    times = np.linspace(0.0, 2.0, 201)  # spacing 0.01, well below the step at rtol 1e-9
    tol = dict(rtol=1e-9, atol=1e-11, dealias=False, filter_strength=None)
    counted = []
    original = nlse._IPContext.rate

    def rate(self, *args):
        counted.append(1)
        return original(self, *args)

    nlse._IPContext.rate = rate
    try:
        dense = nlse.solve(psi0, length=length, times=times, **tol)
        n_dense = len(counted)
        counted.clear()
        ends = nlse.solve(psi0, length=length, times=times[[0, -1]], **tol)
        n_ends = len(counted)
    finally:
        nlse._IPContext.rate = original
    np.testing.assert_array_equal(dense[:, 0], psi0)
    np.testing.assert_allclose(dense[:, -1], ends[:, -1], atol=1e-12)
    # four evaluations per step with outputs, against 12 per step had each output cut one
    assert n_dense < n_ends + 4 * 200 < 12 * 200
    exact = np.stack([
        np.stack([nlse.soliton(x, t, eta=e, velocity=v, x0=x0, length=length) for t in times])
        for e, v, x0 in ((1.2, 0.5, -2.0), (0.9, -0.3, 4.0))
    ])
    assert np.abs(dense - exact).max() < 2e-7
    for i in (37, 101, 163):  # runs that end on an inner output
        alone = nlse.solve(psi0, length=length, times=times[[0, i]], **tol)
        assert np.abs(dense[:, i] - alone[:, -1]).max() < 2e-7
    finer = nlse.solve(psi0, length=length, times=np.linspace(0.0, 2.0, 1601), **tol)
    assert np.abs(finer[:, ::8] - dense).max() < 2e-7  # ~12 outputs a step, in batches
    ref = nlse.solve(psi0[0], length=length, times=times, method="scipy-dop853", rtol=1e-11,
                     atol=1e-13, dealias=False, filter_strength=None)
    assert np.abs(dense[0] - ref).max() < 2e-7
    held = nlse.solve(psi0, length=length, times=times, conserve=True, **tol)
    inv = nlse.invariants(held, length=length)
    for name in ("mass", "energy"):
        assert np.abs(inv[name] / inv[name][:, :1] - 1).max() < 1e-12
    assert np.abs(held - exact).max() < 2e-7


def test_invariants_entropies_and_cases_refuse_what_they_cannot_take():
    # invariants took a 0-d array, a string or NaN silently (a numpy error or NaN out);
    # entropies of M = 0 points raised numpy's error; conserve=() asked for dealias=False;
    # the cases divided by zero
    x = nlse.grid(32, 10.0)
    good = nlse.soliton(x, 0.0)
    for bad, says in ((np.float64(1.0), "shape"), ("psi", "numeric"),
                      (np.where(np.arange(32) == 3, np.nan, good), "NaN or infinite"),
                      (np.zeros((3, 0)), "M >= 1")):
        with pytest.raises(nlse.NLSEInputError, match=says):
            nlse.invariants(bad, length=10.0)
        with pytest.raises(nlse.NLSEInputError, match=says):
            nlse.entropies(bad)
    # sums in double precision: a float16 field's mass 64 x 100^2 / 64 overflowed float16
    assert nlse.invariants(np.full(64, 100, np.float16), length=1.0)["mass"] == 1e4
    # an empty tuple imposes nothing, as conserve=False (the default solver keeps dealias)
    np.testing.assert_array_equal(
        nlse.solve(good, length=10.0, times=[0, 0.1], conserve=()),
        nlse.solve(good, length=10.0, times=[0, 0.1]))
    for args, says in (((1.0, 1.2, 0.5, 0.5), "equal velocity .* do not collide"),
                       ((0.0, 1.0, 0.5, -0.5), "eta1 must be > 0"),
                       ((1.0, np.inf, 1.0, -1.0), "eta2 must be a finite"),
                       ((1.0, 1.0, np.nan, 0.0), "v1 must be a finite"),
                       ((1.0, 1.0, 1e-300, 0.0), "too close to tell apart")):
        with pytest.raises(nlse.NLSEInputError, match=says):
            nlse.cases.collision_shifts(*args)
    for kwargs, says in (({"amplitude": 0.0}, "amplitude must be > 0"),
                         ({"amplitude": np.inf}, "amplitude must be a finite"),
                         ({"amplitude": "1"}, r"amplitude must be a number \(not str\)"),
                         ({"k": np.inf}, "k must be a finite"),
                         ({"epsilon": np.nan}, "epsilon must be a finite"),
                         ({"periods": 0}, "periods must be an integer >= 1"),
                         ({"periods": 1.5}, "periods must be an integer >= 1"),
                         ({"m": 0}, "m must be an integer >= 8"),
                         ({"t_end": 0.0}, "t_end must be after the start time 0"),
                         ({"n_times": 0}, "n_times must be an integer >= 2")):
        with pytest.raises(nlse.NLSEInputError, match=says):
            nlse.cases.modulation_instability(**kwargs)
    two = nlse.cases.modulation_instability(periods=np.int64(2))  # a numpy integer is one
    assert two.length == pytest.approx(2 * 2 * np.pi / np.sqrt(2))
    with pytest.raises(nlse.NLSEInputError, match="formula overflows at"):
        nlse.cases.akhmediev(t_start=-800.0)
    with np.errstate(over="ignore"), pytest.raises(nlse.NLSEInputError,
                                                  match="initial field is not finite"):
        nlse.cases.gaussian_noise(amplitude=1.7e308, noise=1.0)
    # a soliton pair's shift formula at a valid input (eta 1, 1.2; v +-1), by hand
    log = np.log((2.2**2 + 4) / (0.2**2 + 4))
    assert nlse.cases.collision_shifts(1.0, 1.2, 1.0, -1.0) == pytest.approx((log, -log / 1.2))


@pytest.mark.parametrize("method", ["ip-dop853", "scipy-dop853"])
def test_max_steps_bounds_either_method(method):
    # scipy-dop853 ignored max_steps (solve_ivp has no such limit) and ran to the end
    from pdeforge.errors import ConvergenceError

    x = nlse.grid(64, 40.0)
    psi0 = nlse.soliton(x, 0, eta=1.0)
    times = np.linspace(0.0, 1.0, 41)
    kw = dict(length=40.0, times=times, rtol=1e-10, atol=1e-12, method=method,
              dealias=False, filter_strength=None)
    with pytest.raises(ConvergenceError, match="3 steps reached at t="):
        nlse.solve(psi0, max_steps=3, **kw)
    full = nlse.solve(psi0, **kw)

    def passes(limit: int) -> bool:
        try:
            np.testing.assert_array_equal(nlse.solve(psi0, max_steps=limit, **kw), full)
        except ConvergenceError:
            return False
        return True

    lo, hi = 3, 256  # the fewest steps that suffice, by bisection
    assert passes(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    if method == "scipy-dop853":
        # the outputs' dense evaluations (3 a step with outputs) are not steps: the
        # bound is below what counting solve_ivp's evaluations 12 a step would give
        from scipy.integrate import solve_ivp

        k = nlse.wavenumbers(64, 40.0)

        def rate(_t, y):
            psi = np.fft.ifft(y)
            return -0.5j * k**2 * y + np.fft.fft(1j * np.abs(psi) ** 2 * psi)

        sol = solve_ivp(rate, (0.0, 1.0), np.fft.fft(psi0), method="DOP853", rtol=1e-10,
                        atol=1e-12, t_eval=times)
        assert 12 * hi + 2 < sol.nfev


@pytest.mark.parametrize(("eta", "velocity"), [(2.0, 1.0), (1.0, 0.0), (1.5, -0.7)])
def test_energy_scale_of_a_soliton_is_its_analytic_value(eta, velocity):
    """int |psi_x|^2 / 2 + int |psi|^4 / 2 of eta sech(eta x) e^{i v x} is
    (eta^3 / 3 + eta v^2) + 2 eta^3 / 3 = eta (eta^2 + v^2) (the energy, their
    difference, is eta v^2 - eta^3 / 3)."""
    length = 50.0
    psi = nlse.soliton(nlse.grid(1024, length), 0.0, eta=eta, velocity=velocity)
    scale = nlse.energy_scale(np.stack([psi, 2 * psi]), length=length)
    assert scale[0] == pytest.approx(eta * (eta**2 + velocity**2), rel=1e-10)
    assert scale[1] > 4 * scale[0]  # (the terms scale as 4 and 16)
    with pytest.raises(nlse.NLSEInputError, match="length"):
        nlse.energy_scale(psi, length=0.0)
