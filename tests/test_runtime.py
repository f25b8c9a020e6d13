"""The CPU allocator setting: applied where glibc is, a clean no-op elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from pdeforge import runtime


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_tuning_applies_on_glibc_and_keeps_results_identical():
    code = (
        "import torch\n"
        "from pdeforge import runtime\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(64, 64, 64, 64)\n"  # 64 MiB: above glibc's default mmap threshold
        "before = (x @ x).sum().item()\n"
        "assert not runtime.allocator_tuned()\n"
        "assert runtime.tune_cpu_allocator() and runtime.allocator_tuned()\n"
        "assert runtime.tune_cpu_allocator()\n"
        "after = (x @ x).sum().item()\n"
        "assert before == after, (before, after)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_non_glibc_is_a_no_op(monkeypatch):
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    assert runtime.tune_cpu_allocator() is False
