"""Facts and meters of the machine a benchmark runs on: one helper for each, shared by every benchmark.

CPUs and their name, CPU time (this process or another), other processes' share of the CPUs
(``CpuUsage``), the load average, peak memory, the software versions printed with the figures, and
the device the PyTorch reference runs on beside JAX (``torch_device``).
Parameter counts and FLOPs are the models' own (``bisenet_jax.models.summary``); the PyTorch
reference's parameter count is ``bisenet_jax.convert.torch_models.count_parameters``.
"""
from __future__ import annotations

import os
import pathlib
import platform
import resource
import sys
import time
from typing import Any

from bisenet_jax import allocator


def cpu_count() -> int:
    """CPUs this process may run on: what XLA's CPU thread pool and ``torch.set_num_threads`` get."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name, e.g. "AMD EPYC 9R14 96-Core Processor"."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time in seconds, all threads: of this process, or of process ``pid``
    (Linux /proc; 0 when it is gone)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc), e.g. an input pipeline's workers."""
    children = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return children


class CpuUsage:
    """CPU time used by other processes since construction, from /proc/stat and this process's CPU time.

    ``others_percent()`` = (busy CPU time of the machine - this process's CPU time) / (elapsed time x
    CPUs), in percent: how much the benchmark had to share the machine. NaN off Linux, and for
    intervals too short for the kernel's accounting.
    """

    def __init__(self):
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        """(total, busy, own) CPU seconds so far."""
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            total = sum(fields[:8])
            idle = fields[3] + fields[4]  # idle + iowait
        except (OSError, IndexError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        return total / tick, (total - idle) / tick, cpu_seconds()

    def others_percent(self) -> float:
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return float("nan")
        total, busy, own = (e - s for e, s in zip(end, self._start))
        return max(0.0, 100.0 * (busy - own) / total)


def others_cpu_percent(seconds: float = 3.0) -> float:
    """Other processes' share of the CPUs over the next ``seconds`` (this process sleeps; NaN off Linux)."""
    usage = CpuUsage()
    time.sleep(seconds)
    return usage.others_percent()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, to 2 decimals (None where the OS has none)."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(v, 2) for v in os.getloadavg()]


def peak_rss_mb() -> float:
    """The largest resident memory this process has had so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def environment() -> dict[str, Any]:
    """Device, CPUs, software versions and load: what every benchmark records with its figures."""
    import jax

    device = jax.devices()[0]
    env = {"device": f"{device.platform}: {cpu_name() if device.platform == 'cpu' else device.device_kind}",
           "cpu": cpu_name(), "cpus": cpu_count(), "logical_cpus": os.cpu_count(),
           "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()],
           "python": platform.python_version(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "allocator": allocator.describe(), "load_average": load_average()}
    try:
        import torch
    except ImportError:
        return env
    env["torch"] = torch.__version__
    env["torch_threads"] = torch.get_num_threads()
    if torch_device() == "cuda":  # only on a GPU: the CPU records keep their keys
        env["torch_device"] = f"cuda: {torch.cuda.get_device_name(0)}"
    return env


def torch_device() -> str:
    """The device the PyTorch reference runs on beside JAX: "cuda" when ``torch.cuda.is_available()``
    and JAX's backend is not the CPU (so both sides share the accelerator), else "cpu"."""
    import jax
    import torch

    return "cuda" if torch.cuda.is_available() and jax.default_backend() != "cpu" else "cpu"


def torch_synchronize(device: str) -> None:
    """Wait for the GPU's queued work (``torch.cuda.synchronize``); nothing on the CPU, where PyTorch is
    synchronous."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
