"""The memory allocator of a run: mimalloc, preloaded by the command-line entry points, on Linux.

Why. XLA:CPU allocates each execution's temporary buffer (910 MB in V1-X39's train step at batch 8,
256x320) and its outputs with ``malloc``. glibc serves blocks that large with a fresh ``mmap`` and
gives them back with ``munmap`` when they are freed, so every train step maps its whole working set
again: about 250,000 page faults per step (``/usr/bin/time``, ``strace``), each a kernel entry
that zeroes a 4 KiB page, on the step's own threads. glibc keeps freed memory only for blocks
under its mmap threshold, at most 32 MiB on 64-bit (``M_MMAP_THRESHOLD``), so no ``mallopt`` or
``GLIBC_TUNABLES`` setting keeps a 910 MB block (its ``glibc.malloc.hugetlb=1`` huge pages were
measured too: V1-X39 faster, V1-R18 and V2 not). mimalloc keeps freed memory and hands it out
again: re-touching a freed 256 MiB block costs 0 page faults and ~10 ms with it against 65,537
faults and ~150 ms with glibc (tests/test_allocator.py), and the train step takes 8-30% less
(docs/profile.md). No JAX or XLA setting replaces the allocator, and the only way to give a
process another ``malloc`` is to load it first, so a hand-written re-execution does it (the way
PyTorch's CPU launcher, ``torch.backends.xeon.run_cpu``, preloads jemalloc or tcmalloc).

What. :func:`enable`, called first by the entry points (never on import), re-executes the same
command once with mimalloc (the ``cmeel-mimalloc`` wheel, a dependency on Linux x86-64 and
aarch64) at the front of ``LD_PRELOAD`` and ``MIMALLOC_PURGE_DELAY=-1`` (keep freed memory; see
``MIMALLOC_SETTINGS``): same pid, arguments and environment otherwise. Child processes inherit it. It does nothing when:

- the platform is not Linux, or the wheel is not installed;
- ``LD_PRELOAD`` already names an allocator (``*malloc*``): the user's choice wins;
- ``BISENET_MALLOC=system`` (or ``0``): the opt out, as ``BISENET_XLA_DEFAULTS=0`` for the XLA
  options of ``bisenet_jax/xla_flags.py``.

It is process-wide: a PyTorch model trained or timed in the same process (``--compare-torch``, the
CamVid comparison) runs on mimalloc too; docs/benchmarks.md reports both sides with both allocators.
The run log and the benchmark protocols print :func:`describe`.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

OPT_OUT = "BISENET_MALLOC"
# mimalloc returns freed memory to the kernel 10 ms after it is freed by default; between two train
# steps of the real loop (fetching the batch, logging) more time passes, and the step's buffers are then
# faulted in again. Never returning it (-1) measured: V1-X39 CamVid loop 11.78 images/s against 9.00
# with the default delay and 8.31 with glibc (scripts/benchmark_loop.py, docs/profile.md). A user's own
# MIMALLOC_PURGE_DELAY wins.
MIMALLOC_SETTINGS = {"MIMALLOC_PURGE_DELAY": "-1"}
DISTRIBUTION = "cmeel-mimalloc"
LIBRARY = "cmeel.prefix/lib/libmimalloc.so.3"


def mimalloc_path() -> str | None:
    """The installed mimalloc shared library (from the ``cmeel-mimalloc`` wheel), or None."""
    from importlib import metadata
    try:
        path = metadata.distribution(DISTRIBUTION).locate_file(LIBRARY)
    except metadata.PackageNotFoundError:
        return None
    return str(path) if os.path.isfile(str(path)) else None


def opted_out(environ: Mapping[str, str]) -> bool:
    return environ.get(OPT_OUT, "").strip().lower() in ("system", "0", "false", "no", "off")


def preloaded_allocator(environ: Mapping[str, str]) -> str:
    """The entry of ``LD_PRELOAD`` that is an allocator (``*malloc*``), or ""."""
    entries = environ.get("LD_PRELOAD", "").replace(":", " ").split()
    return next((entry for entry in entries if "malloc" in os.path.basename(entry)), "")


def planned_preload(environ: Mapping[str, str], library: str | None, platform: str = sys.platform) -> str | None:
    """The ``LD_PRELOAD`` value to re-execute with, or None when nothing is to be done."""
    if not platform.startswith("linux") or library is None or opted_out(environ) or preloaded_allocator(environ):
        return None
    return " ".join(filter(None, [library, environ.get("LD_PRELOAD", "").strip()]))


def loaded_allocator(maps: str = "/proc/self/maps") -> str:
    """The preloaded allocator library mapped into this process (``libmimalloc.so.3``...), or ""."""
    try:
        with open(maps) as f:
            names = {fields[5] for line in f if len(fields := line.split()) > 5}  # the 6th field: the path
    except OSError:
        return ""
    return next((os.path.basename(n) for n in sorted(names) if "malloc" in os.path.basename(n)
                 and "libc_malloc_debug" not in n), "")


def enable() -> None:
    """Re-execute this command once with mimalloc preloaded where it applies (module docstring).

    Call it first in a program's ``__main__``, before any output. If the re-execution fails, the run
    goes on with the C library's allocator.
    """
    preload = planned_preload(os.environ, mimalloc_path())
    if preload is None or not sys.executable:  # after the re-execution LD_PRELOAD names mimalloc: None
        return
    environ = {**MIMALLOC_SETTINGS, **os.environ, "LD_PRELOAD": preload}
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: the process started without that file descriptor
            stream.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
    except OSError as error:  # e.g. an interpreter path that vanished: not worth stopping a run for
        print(f"warning: could not re-execute with LD_PRELOAD={preload} ({error}); going on with the C "
              f"library's allocator", file=sys.stderr or sys.stdout)


def describe(environ: Mapping[str, str] | None = None, loaded: str | None = None) -> str:
    """One line for a run's log and the benchmark protocols: which allocator this process runs on."""
    environ = os.environ if environ is None else environ
    loaded = loaded_allocator() if loaded is None else loaded
    if loaded:
        return f"memory allocator: {loaded} (LD_PRELOAD; bisenet_jax/allocator.py, {OPT_OUT}=system for the C library's)"
    why = (f"{OPT_OUT}={environ[OPT_OUT]}" if opted_out(environ)
           else f"{DISTRIBUTION} not installed" if sys.platform.startswith("linux") and mimalloc_path() is None
           else "not Linux" if not sys.platform.startswith("linux")
           else "not started by a bisenet_jax command")
    return f"memory allocator: the C library's ({why})"
