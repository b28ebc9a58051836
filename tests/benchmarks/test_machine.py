"""The machine facts every benchmark records: CPUs, CPU time, load, memory, versions."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from bisenet_jax.benchmarks import machine


def test_cpu_count_is_the_cpus_this_process_may_use():
    assert 1 <= machine.cpu_count() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert machine.cpu_count() == len(os.sched_getaffinity(0))


def test_cpu_name_is_a_name():
    assert isinstance(machine.cpu_name(), str) and machine.cpu_name().strip()


def test_cpu_seconds_grow_with_this_process_work():
    before = machine.cpu_seconds()
    sum(i * i for i in range(2_000_000))
    assert machine.cpu_seconds() > before


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_cpu_seconds_and_child_pids_of_another_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in machine.child_pids(os.getpid())
        assert 0.0 <= machine.cpu_seconds(child.pid) < 30.0
    finally:
        child.kill()
        child.wait()
    assert machine.cpu_seconds(child.pid) == 0.0  # gone


def test_load_average_and_peak_memory():
    load = machine.load_average()
    assert load is None or (len(load) == 3 and all(v >= 0 for v in load))
    assert machine.peak_rss_mb() > 10  # this process holds at least the Python interpreter and jax


def test_environment_names_the_device_cpus_and_versions():
    env = machine.environment()
    assert env["cpus"] == machine.cpu_count() and env["cpu"] == machine.cpu_name()
    assert env["jax"] == jax.__version__ and env["jax_devices"] == [str(d) for d in jax.devices()]
    assert env["device"].startswith(jax.devices()[0].platform)
