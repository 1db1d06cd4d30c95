"""The heap settings of the processes that evaluate blocks (gridstress/heap.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
PROBE = "from gridstress.heap import keep_freed_memory as k; print(k(), k())"


def probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=clean | env, check=True, capture_output=True, text=True
    ).stdout.split()


@pytest.mark.skipif(not GLIBC, reason="the settings apply to glibc only")
def test_settings_apply_once_on_glibc():
    assert probe() == ["True", "True"]


@pytest.mark.parametrize("name", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"])
def test_a_users_own_malloc_setting_is_left_alone(name):
    assert probe(**{name: "131072"}) == ["False", "False"]
