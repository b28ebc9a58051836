"""The XLA flags the entry points set before JAX starts: the measured fast path on CPU.

XLA reads ``XLA_FLAGS`` once, when JAX creates its first backend, so every command-line entry point
(``python -m bisenet_jax.main``, ``scripts/*.py``) calls :func:`apply` before anything imports JAX.
A library user (a notebook) gets nothing changed: call ``apply()`` first thing to opt in.

The defaults, each measured on the 2-core AMD EPYC (Zen 4) of ``docs/profile.md`` with the V1-R18
train step (batch 8, 256x320), A/B in alternating fresh processes:

- ``--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce``: XLA:CPU already runs convolutions
  through YNNPACK; this also hands YNNPACK the matmuls, elementwise fusions and reductions (BatchNorm,
  the loss, the optimizer update).
- ``--xla_cpu_prefer_vector_width=512`` (only where the CPU has AVX-512): XLA's own fused loops use
  the 512-bit registers instead of its 256-bit default.

Together: 2.05 s per step against 2.34-2.47 s without, in the same run (``docs/profile.md``).
Both flags are ``xla_cpu_*`` ones, read only when XLA compiles for the CPU; GPU and TPU programs are
untouched. Rules: a flag the user already put in ``XLA_FLAGS`` is never changed (theirs wins, ours is
not added); ``BISENET_XLA_DEFAULTS=0`` adds none; what was added is logged by the entry points.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import MutableMapping

OPT_OUT = "BISENET_XLA_DEFAULTS"


def _has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo) as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def default_flags(avx512: bool | None = None) -> list[str]:
    """The project's CPU flags for this machine (``avx512`` defaults to what /proc/cpuinfo says)."""
    flags = ["--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce"]
    if _has_avx512() if avx512 is None else avx512:
        flags.append("--xla_cpu_prefer_vector_width=512")
    return flags


def _name(flag: str) -> str:
    return flag.lstrip("-").split("=", 1)[0]


def merge(user_flags: str, defaults: list[str]) -> tuple[str, list[str]]:
    """(``user_flags`` plus each default whose flag name it does not already set, the added ones)."""
    present = {_name(f) for f in user_flags.split()}
    added = [f for f in defaults if _name(f) not in present]
    return " ".join([*user_flags.split(), *added]), added


def jax_started() -> bool:
    """True when JAX has already created a backend (then new XLA_FLAGS would be ignored)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def apply(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Add the project's defaults to ``environ["XLA_FLAGS"]`` (default ``os.environ``); return the
    flags added (none when ``BISENET_XLA_DEFAULTS=0`` or the user set them all already)."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    merged, added = merge(environ.get("XLA_FLAGS", ""), default_flags())
    if added:
        if environ is os.environ and jax_started():
            logging.getLogger(__name__).warning(
                "XLA_FLAGS defaults %s were set after JAX created its backend; they take effect only in a "
                "new process (call bisenet_jax.xla_flags.apply() before using JAX)", added)
        environ["XLA_FLAGS"] = merged
    return added


def describe(added: list[str], environ: MutableMapping[str, str] | None = None) -> str:
    """One line for a run's log: the XLA_FLAGS in effect and which of them the project added."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "").strip() or "(none)"
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        origin = f"project defaults off ({OPT_OUT}=0)"
    else:
        origin = f"project defaults added: {' '.join(added)}" if added else "no project defaults added"
    return f"XLA_FLAGS: {flags} [{origin}]"
