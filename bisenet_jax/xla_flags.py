"""XLA compiler options on CPU for the train step, inference and the initialisation (the measured fast path, and
only where it is one).

By default XLA:CPU (jaxlib 0.10.2) hands each convolution to YNNPACK, and its matmuls and reductions
as well. Setting the fusion type to ``dot,reduce`` replaces that default: YNNPACK keeps the step's
matmuls and reductions, and the convolutions go to XLA's own (Eigen) convolution. That makes the
train step faster but inference slower, measured on the 2-core AMD EPYC (Zen 4) of docs/profile.md
(alternating fresh processes, same session; figures from sessions 2-6, measured with
``dot,eltwise,reduce``):

- train step (batch 8): V1-R18 2.03 s against 2.55 s without, V1-X39 1.43 / 1.51 s, V2 1.90-2.03 /
  2.10 s;
- inference (1x1024x2048): V1-R18 1929 ms against 1655 ms without, V2 1853 / 1588 ms, X39 844 / 767 ms.

Giving the train step's convolutions back to YNNPACK (``individual_convolution`` added to the type,
through ``XLA_FLAGS``) is slower (session 15, same protocol): V1-R18 1.98 / 2.00 s against 1.70 /
1.56 s, V2 1.39 / 1.46 s against 1.34 / 1.27 s, V1-X39 0.75 s against 0.69 s.

The elementwise part (``eltwise``) is left out. For the models with depthwise convolutions it was
slower from the start (session 6): YNNPACK's elementwise fusions do not take slices, so the nine
taps of the shifted-sum depthwise convolution (``models/kernels.py``) become nine copies before a
YNNPACK sum (8x32x40x64 forward 1.9 ms against 0.45 ms, input gradient 2.8 against 0.4 ms); V1-X39's
step 1.085 s with it against 1.047 s without, V2 1.93 / 1.78 s. V1-R18, which has none, kept it
until session 44 (1.96 s against 2.03-2.14 s in session 6, when XLA's own transposes for the kernel
gradients were slow); since the kernel gradients' operands are transposed in row blocks and 1x1
kernel gradients are matmuls, ``eltwise`` is slower for R18 too: R18's step (``benchmark_train.py`` JAX side,
``XLA_FLAGS`` setting the type, alternating fresh processes, AMD EPYC VM) 1.510, 1.464, 1.484 s
with ``dot,reduce`` against 1.586, 1.513, 1.533 s with ``dot,eltwise,reduce``; at 11 classes 1.430 /
1.518 against 1.530 / 1.504 s. Alone, its SGD update took 21.8 ms with ``eltwise`` against 6.5 ms
without on the Intel VM of session 43 (docs/profile.md). So every model's step gets ``dot,reduce``.

So it is not a process-wide ``XLA_FLAGS`` default: :func:`train_step_options` gives it to the one
``jax.jit`` of the train step (``bisenet_jax/train/step.py``) as per-program compiler options, on
the CPU backend only, and GPU/TPU programs never see it.

Inference (:func:`inference_options`: evaluation, prediction, ``benchmark_speed.py``) gets the same
option only on x86 CPUs without AVX-512, where the measurements went the other way: on the AMD EPYC
Zen 3 VM of sessions 52-53 (AVX2), the forward compiled with ``dot,reduce`` against XLA's defaults, both
compiled in one process and timed in alternating blocks (6 rounds of 4 calls, median; a ``/tmp`` script,
session 53): V1-R18 442 / 569 ms at 1x512x1024 and 1903 / 2194 ms at 1x1024x2048, V1-X39 134 / 185 and
600 / 846 ms, V2 471 / 510 and 1635 / 1959 ms (8-41% faster; logits equal to 3e-5 relative). On the
Zen 4 VM (AVX-512) it was 10-17% slower (figures above; 12-25% in docs/benchmarks.md's runs), so CPUs
with AVX-512 (``avx512f`` in ``/proc/cpuinfo``; the Intel VMs with AVX-512 were not measured this way) and
CPUs whose flags cannot be read (not Linux, not x86) keep XLA's defaults. The rule rests on those two AMD
VMs; other AVX2 CPUs (Intel, Zen 2) were not measured. Exported files (StableHLO, ONNX, TFLite) carry no
options; a StableHLO file run by ``export/runtime.py`` or inside evaluation's programs is compiled with
these, like the Flax model. (``--xla_cpu_prefer_vector_width=512`` was measured too and left out: no
gain in training, 2122 ms against 1655 ms in R18 inference.)

One difference in values: YNNPACK's max ignores NaN. ``jnp.max`` of an array holding a NaN is the
largest of its other values, and a ReLU fused into a YNNPACK reduction, ``sum(max(x, 0))``, drops a
NaN ``x``; sums and elementwise ops propagate NaN. (XLA:CPU's defaults hand reductions to YNNPACK
as well, so this holds without the option too.) The step's finite check reads
sums (the loss and the gradient norm), so a NaN batch is still refused and the run stops naming the
step (tests/train/test_faults.py, tests/test_xla_flags.py).

Accuracy: session 30 found V2's float32 gradients at the initialisation less precise under ``dot,reduce``
(median relative error 7.4e-5 against 2.1e-6) on the race's first batch, but not on a random batch
(6.0e-5 against 6.6e-5). Two 30-minute V2 CamVid races without the option came closer to PyTorch than
the same seeds had with it. Session 32 repeated seed 2 with the option, same code: 38.4% against 24.4%
the first time. One run moves by 14 points on its own, so those races do not show an effect of the
option (docs/benchmarks.md). Its parts, measured on V2's step: ``reduce`` alone is as fast as
``dot,reduce``, and ``dot`` alone is slower than no option.

Rules: a flag the user sets in ``XLA_FLAGS`` wins (the option is then not passed, so theirs
applies); ``BISENET_XLA_DEFAULTS=0`` turns the options off. The training log and the benchmark
protocols print :func:`describe`.

The initialisation program is the other one compiled with options (:func:`init_options`): it runs once per
start and its result is a few MB of random numbers, but at XLA:CPU's default LLVM optimisation its
compilation took longer than the model's forward pass: for V2 (64x64 input) 24 s against 4 s for the
forward, V1-R18 12.6 s, V1-X39 26 s, measured on the 2-core AMD EPYC of session 25
(``/tmp`` script timing ``jax.jit(init).lower(rng).compile(...)``; most of it is LLVM optimising the
few hundred threefry and truncated-normal kernels). With ``xla_backend_optimization_level=0`` the
same program compiles in 7.1 s (V2), 4.7 s (R18) and 14.4 s (X39) and still runs in about 0.1 s. The
values are the same random draws; LLVM's floating-point contractions differ, so about 4% of the
elements differ in their last bit (relative 1.6e-7 at most) from the optimised program's.
"""
from __future__ import annotations

import functools
import os
from typing import Mapping

OPT_OUT = "BISENET_XLA_DEFAULTS"

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
# As ``XLA_FLAGS`` spells them (what describe() prints and what a user can set to override).
TRAIN_STEP_CPU_FLAGS = {YNN_FUSION_TYPE: "dot,reduce"}
_PREFIX = "LIBRARY_FUSION_TYPE_"
# For inference programs, on x86 CPUs without AVX-512 only (see the module docstring).
INFERENCE_CPU_FLAGS = {YNN_FUSION_TYPE: "dot,reduce"}
# For the one-off initialisation program (see the module docstring).
INIT_CPU_OPTIONS = {"xla_backend_optimization_level": 0}


def _compiler_value(flag_value: str) -> str:
    """``dot,eltwise`` as jax.jit's ``compiler_options`` take it: the DebugOptions enum names."""
    return ",".join(f"{_PREFIX}{kind.upper()}" for kind in flag_value.split(","))


def _flag_value(compiler_value: str) -> str:
    """The inverse of :func:`_compiler_value`: ``dot,eltwise`` as ``XLA_FLAGS`` spells it."""
    return ",".join(kind.removeprefix(_PREFIX).lower() for kind in compiler_value.split(","))


def _fusion_options(flags: Mapping[str, str]) -> dict[str, str]:
    """``XLA_FLAGS``-spelled fusion-type flags as ``compiler_options`` (the DebugOptions enum names)."""
    return {name: _compiler_value(value) for name, value in flags.items()}


def _as_xla_flags(options: Mapping[str, str]) -> str:
    """Fusion-type ``compiler_options`` as ``XLA_FLAGS`` spells them, for a log line."""
    return " ".join(f"--{name}={_flag_value(value)}" for name, value in options.items())


def _user_flag_names(environ: Mapping[str, str]) -> set[str]:
    return {f.lstrip("-").split("=", 1)[0] for f in environ.get("XLA_FLAGS", "").split()}


def defaults_enabled(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(OPT_OUT, "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_options(options: Mapping, backend: str | None, environ: Mapping[str, str] | None) -> dict:
    """``options`` on the "cpu" backend (default ``jax.default_backend()``) less those the user's ``XLA_FLAGS``
    sets; {} on other backends and with the opt-out."""
    environ = os.environ if environ is None else environ
    if backend is None:
        import jax
        backend = jax.default_backend()
    if backend != "cpu" or not defaults_enabled(environ):
        return {}
    user = _user_flag_names(environ)
    return {name: value for name, value in options.items() if name not in user}


def train_step_options(backend: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``compiler_options`` for ``jax.jit`` of the train step: the CPU flags above on the "cpu"
    backend (default ``jax.default_backend()``), minus any the user set in ``XLA_FLAGS``; else {}."""
    return _fusion_options(_cpu_options(TRAIN_STEP_CPU_FLAGS, backend, environ))


def cpu_has_avx512(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU has AVX-512 (``avx512f`` among the ``flags`` of ``/proc/cpuinfo``, or of the text
    ``cpuinfo``); None where that cannot be told (no ``/proc/cpuinfo``, or no x86 ``flags`` line in it)."""
    if cpuinfo is None:
        return _this_cpu_has_avx512()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return "avx512f" in value.split()
    return None


@functools.cache
def _this_cpu_has_avx512() -> bool | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return cpu_has_avx512(f.read())
    except OSError:
        return None


def inference_options(backend: str | None = None, environ: Mapping[str, str] | None = None, *,
                      avx512: bool | None = None) -> dict[str, str]:
    """The ``compiler_options`` for ``jax.jit`` of an inference program (evaluation, prediction, the
    inference benchmark): ``INFERENCE_CPU_FLAGS`` on the "cpu" backend of an x86 CPU without AVX-512
    (``avx512``, by default :func:`cpu_has_avx512`), minus any the user set in ``XLA_FLAGS``; else {}."""
    if avx512 is None:
        avx512 = cpu_has_avx512()
    if avx512 is not False:
        return {}
    return _fusion_options(_cpu_options(INFERENCE_CPU_FLAGS, backend, environ))


def describe_inference(options: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str:
    """A clause for a log: what inference programs are compiled with (``options``: :func:`inference_options`)."""
    environ = os.environ if environ is None else environ
    if options:
        return (f"inference compiled with {_as_xla_flags(options)} "
                "(an x86 CPU without AVX-512; bisenet_jax/xla_flags.py)")
    if not defaults_enabled(environ):
        return f"inference options off ({OPT_OUT}=0)"
    return "no inference options (not on CPU, a CPU with AVX-512 or unknown flags, or XLA_FLAGS sets them)"


def init_options(backend: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The ``compiler_options`` for the initialisation program (``train/setup.py``): ``INIT_CPU_OPTIONS``
    on the "cpu" backend, minus any the user set in ``XLA_FLAGS``; else {} (and with the opt-out)."""
    return _cpu_options(INIT_CPU_OPTIONS, backend, environ)


def describe(options: Mapping[str, str], environ: Mapping[str, str] | None = None, *,
             init: Mapping[str, int] | None = None, inference: Mapping[str, str] | None = None) -> str:
    """One line for a run's log: the user's XLA_FLAGS and the options the train step (``options``), the
    initialisation program (``init``, when given) and inference programs (``inference``, when given) are
    compiled with."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "").strip() or "(none)"
    if options:
        step = f"train step compiled with {_as_xla_flags(options)} (bisenet_jax/xla_flags.py; {OPT_OUT}=0 turns it off)"
    elif not defaults_enabled(environ):
        step = f"train step options off ({OPT_OUT}=0)"
    else:
        step = "no train step options (not on CPU, or XLA_FLAGS sets them)"
    if init:
        step += "; initialisation compiled with " + " ".join(f"--{name}={value}" for name, value in init.items())
    if inference is not None:
        step += "; " + describe_inference(inference, environ)
    return f"XLA_FLAGS: {flags}; {step}"
