"""Inference speed: latency, FPS, parameters and GFLOPs, measured under a protocol that is printed.

Protocol (what ``benchmark`` does, and what ``format_protocol`` prints next to the numbers):

- the forward pass of the model in inference mode (BatchNorm statistics, no auxiliary heads) on
  one random input of fixed shape, logits at the input resolution (N, H, W, C) as the output;
- JAX: the whole forward pass is one ``jax.jit`` program, compiled ahead of time (the compile
  time is reported separately and never timed as latency) with the compiler options evaluation and
  prediction use (``bisenet_jax.xla_flags.inference_options``: on x86 CPUs without AVX-512 one
  YNNPACK option, else none; printed with the protocol); the output is waited for with
  ``block_until_ready`` in every iteration;
- PyTorch (``compare_torch``): the reference module from ``bisenet_jax.convert.torch_models`` in
  eager mode, ``eval()`` under ``torch.inference_mode()``, NCHW float input, the same weights, and
  ``torch.set_num_threads`` equal to the number of CPUs JAX may use;
- ``warmup`` untimed iterations, then ``iterations`` timed ones; latency is the median with the
  10th and 90th percentiles; FPS = batch size / median latency. When both frameworks run, their
  iterations alternate (JAX, PyTorch, JAX, ...), so load from other processes on a shared
  machine hits both alike; the load average before and after is printed.
- PyTorch compiled (``torch_compile``, a third row ``torch-compile``): the same eager module, same
  weights and input, under ``torch_reference.compile_model`` (``torch.compile``, inductor, default
  mode, static shapes: the whole forward), called under ``torch.inference_mode()``; the first call is
  timed on its own (compile + one forward), ``compile_seconds`` = that minus the median latency; then
  it takes its turn in the alternating loop. Its logits are compared with JAX's and with eager
  PyTorch's (``max_rel_diff``, ``max_rel_diff_eager``). A compiler failure gives a row with the
  one-line ``error`` instead of an exception.
- parameters and GFLOPs: ``bisenet_jax.models.summary`` (``count_params``; ``flops``, XLA's count of
  the network's convolutions, 2 FLOPs per multiply-add, the same figure as ``scripts/model_stats.py``).

On a GPU: JAX runs on its default backend, whatever it is; PyTorch on CUDA when it has it
(``machine.torch_device``), module and input on the GPU, ``cudnn.benchmark`` on (XLA autotunes its
convolutions too), and ``torch.cuda.synchronize()`` ending every iteration. bfloat16: JAX's model
``dtype`` (float32 parameters, bfloat16 compute); PyTorch's module and input ``.to(bfloat16)``, as on
the CPU (the fastest eager form, what a user deploying in bfloat16 runs).

The environment printed with the numbers is ``bisenet_jax.benchmarks.machine.environment()``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bisenet_jax import xla_flags
from bisenet_jax.benchmarks.machine import CpuUsage, cpu_count, torch_device, torch_synchronize
from bisenet_jax.models import create_model
from bisenet_jax.models.summary import count_params, flops

PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass
class SpeedResult:
    """One (framework, model, shape, precision) measurement. Latencies in milliseconds."""

    framework: str
    model: str
    batch_size: int
    height: int
    width: int
    precision: str
    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    latency_ms_min: float
    fps: float
    iterations: int
    warmup: int
    compile_seconds: float  # JAX: lower + compile; torch: moving the module to the dtype (eager, no compile)
    threads: int
    params: int
    gflops: float  # models.summary.flops of the forward (2 FLOPs per multiply-add); NaN for torch
    max_rel_diff: float = float("nan")  # torch only: max |torch - jax| / max |jax| of the logits
    # Median share of the machine's CPU time used by *other* processes while this one was timed
    # (from /proc/stat; NaN where unavailable): 0 on a quiet machine.
    other_cpu_percent: float = float("nan")
    rounds: int = 0  # iterations timed in all (more than `iterations` when waiting for quiet ones)
    quiet_samples: int = -1  # with quiet_percent: how many timed iterations were quiet (-1: not asked)
    # torch-compile only: max |compiled - eager| / max |eager| of the logits; the first call's seconds
    # (compile + one forward; compile_seconds is this minus the median latency); why it failed ("" if not).
    max_rel_diff_eager: float = float("nan")
    first_call_seconds: float = float("nan")
    error: str = ""

    @property
    def gmacs(self) -> float:
        """Multiply-adds, what most papers call FLOPs."""
        return self.gflops / 2


# --------------------------------------------------------------------------------------------
# Building blocks


def random_variables(model: Any, input_shape: Sequence[int], seed: int = 0) -> dict:
    """Variables with the model's shapes filled on the host: fan-in scaled normal kernels, zero
    biases, BatchNorm scale 1 / mean 0 / var 1.

    Seconds instead of the minute ``jax.jit(model.init)`` can take for a ResNet on two CPU cores;
    speed does not depend on the values as long as they are finite and not denormal.
    """
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape, jnp.float32), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = getattr(path[-1], "key", str(path[-1]))
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            return (rng.standard_normal(leaf.shape) * math.sqrt(2.0 / fan_in)).astype(leaf.dtype)
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return float(np.median(values)) if values else float("nan")


def summarize(seconds: Sequence[float], batch_size: int) -> dict[str, float]:
    """Latency statistics (ms) and FPS of per-iteration wall times in seconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    median = float(np.median(ms))
    return {"latency_ms_median": median, "latency_ms_p10": float(np.percentile(ms, 10)),
            "latency_ms_p90": float(np.percentile(ms, 90)), "latency_ms_min": float(ms.min()),
            "fps": batch_size * 1e3 / median}


def compile_jax_forward(model: Any, variables: dict, x: jax.Array) -> tuple[Callable, float]:
    """Ahead-of-time compiled forward, with the project's inference options (``xla_flags.inference_options``,
    as evaluation and prediction compile it): returns (compiled fn, compile seconds)."""
    forward = jax.jit(lambda variables, x: model.apply(variables, x, train=False))
    start = time.perf_counter()
    compiled = forward.lower(variables, x).compile(compiler_options=xla_flags.inference_options() or None)
    return compiled, time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# The benchmark


def benchmark_model(model: Any, variables: dict, batch_size: int, height: int, width: int, *,
                    model_name: str = "model", precision: str = "float32", warmup: int = 3,
                    iterations: int = 10, torch_model: Any = None, seed: int = 0,
                    quiet_percent: float | None = None, max_rounds: int | None = None,
                    torch_compile: bool = False) -> list[SpeedResult]:
    """Times ``model`` (already built with the compute dtype of ``precision``) on one input shape.

    With ``torch_model`` (a PyTorch module holding the same weights), it runs the same protocol in
    the same loop, iterations alternating, and is returned as a second result; with ``torch_compile``
    too, the same module under ``torch.compile`` is a third (``torch-compile``).

    ``quiet_percent`` (for shared machines): keep only iterations during which other processes
    used at most that share of the CPUs, timing up to ``max_rounds`` (default 6 x iterations)
    rounds until each framework has ``iterations`` kept samples. If that fails, all samples are
    used and ``quiet_samples`` in the result says how many were quiet.
    """
    if warmup < 0 or iterations < 1:
        raise ValueError(f"need warmup >= 0 and iterations >= 1, got {warmup} and {iterations}")
    variables = jax.device_put(variables)
    x_host = np.random.default_rng(seed).standard_normal((batch_size, height, width, 3)).astype(np.float32)
    x = jax.device_put(x_host)
    compiled, compile_seconds = compile_jax_forward(model, variables, x)
    runners = {"jax": lambda: compiled(variables, x).block_until_ready()}
    setup = {"jax": compile_seconds}
    if torch_model is not None:
        runners["torch"], setup["torch"] = _torch_runner(torch_model, x_host, precision)
    compile_error = ""
    if torch_model is not None and torch_compile:
        compiled_run, setup["torch-compile"], compile_error = _torch_compile_runner(runners["torch"])
        if compiled_run is not None:
            runners["torch-compile"] = compiled_run

    for _ in range(warmup):
        for run in runners.values():
            run()
    samples = _time_rounds(runners, iterations, quiet_percent,
                           iterations if quiet_percent is None else (max_rounds or 6 * iterations))

    common = dict(model=model_name, batch_size=batch_size, height=height, width=width, precision=precision,
                  warmup=warmup)
    results = [SpeedResult(framework="jax", **common, **_statistics(samples["jax"], batch_size, iterations,
                                                                    quiet_percent),
                           compile_seconds=compile_seconds, threads=cpu_count(), params=count_params(variables),
                           gflops=flops(model, variables, x.shape) / 1e9)]
    if torch_model is not None:
        import torch

        from bisenet_jax.convert.torch_models import count_parameters

        diff = _max_rel_diff(compiled(variables, x), runners["torch"].output())
        results.append(SpeedResult(framework="torch", **common,
                                   **_statistics(samples["torch"], batch_size, iterations, quiet_percent),
                                   compile_seconds=setup["torch"], threads=torch.get_num_threads(),
                                   params=count_parameters(torch_model),
                                   gflops=float("nan"), max_rel_diff=diff))
        if torch_compile:
            results.append(_torch_compile_result(common, samples.get("torch-compile"), batch_size, iterations,
                                                 quiet_percent, setup["torch-compile"], compile_error,
                                                 runners, compiled(variables, x), results[-1]))
    return results


def _time_rounds(runners: dict, iterations: int, quiet_percent: float | None, max_rounds: int) -> dict:
    """(seconds, others %) per run of every runner, runners alternating within each round."""
    samples = {name: [] for name in runners}

    def quiet_count(name):
        return sum(1 for _, others in samples[name] if _is_quiet(others, quiet_percent))

    for _ in range(max_rounds):
        for name, run in runners.items():  # alternate, so that outside load hits both alike
            usage = CpuUsage()
            start = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - start, usage.others_percent()))
        if all(quiet_count(name) >= iterations for name in runners):
            break
    return samples


def _is_quiet(others: float, quiet_percent: float | None) -> bool:
    """Runs too short for the kernel's CPU accounting (NaN) cannot be judged and count as quiet."""
    return quiet_percent is None or others != others or others <= quiet_percent


def _statistics(samples: list, batch_size: int, iterations: int, quiet_percent: float | None) -> dict:
    quiet = [s for s in samples if quiet_percent is not None and _is_quiet(s[1], quiet_percent)]
    used = quiet[:iterations] if len(quiet) >= iterations else samples
    return {**summarize([t for t, _ in used], batch_size), "iterations": len(used),
            "other_cpu_percent": _median([o for _, o in used]), "rounds": len(samples),
            "quiet_samples": len(quiet) if quiet_percent is not None else -1}


def benchmark(model_name: str, num_classes: int = 19, resolutions: Sequence[tuple[int, int]] = ((512, 1024),),
              batch_sizes: Sequence[int] = (1,), precisions: Sequence[str] = ("float32",), *,
              warmup: int = 3, iterations: int = 10, compare_torch: bool = False, seed: int = 0,
              quiet_percent: float | None = None, max_rounds: int | None = None,
              progress: Callable[[str], None] | None = None, torch_compile: bool = False) -> list[SpeedResult]:
    """``benchmark_model`` for a registered model over every (precision, resolution, batch size).

    Weights are ``random_variables`` (speed does not depend on them); with ``compare_torch`` the
    same weights are loaded into ``build_torch_model(model_name, num_classes, aux_heads=False)``;
    ``torch_compile`` (implies ``compare_torch``) adds the ``torch-compile`` rows.
    """
    results = []
    compare_torch = compare_torch or torch_compile
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        model = create_model(model_name, num_classes, dtype=precision, aux_heads=False)
        variables = random_variables(model, (1, 64, 64, 3), seed)
        torch_model = reference_torch_model(model_name, num_classes, variables) if compare_torch else None
        for height, width in resolutions:
            for batch_size in batch_sizes:
                done = len(results)
                results += benchmark_model(model, variables, batch_size, height, width, model_name=model_name,
                                           precision=precision, warmup=warmup, iterations=iterations,
                                           torch_model=torch_model, seed=seed, quiet_percent=quiet_percent,
                                           max_rounds=max_rounds, torch_compile=torch_compile)
                if progress is not None:
                    progress(format_results(results[done:]))
    return results


# --------------------------------------------------------------------------------------------
# Reporting


def format_protocol(env: dict[str, Any], warmup: int, iterations: int, quiet_percent: float | None = None,
                    torch_compile: str = "") -> str:
    """The measurement protocol and environment, printed above the numbers; ``torch_compile``: the
    sentence on the inductor cache of the ``torch-compile`` rows ("" without them)."""
    load = env.get("load_average")
    lines = [
        f"device: {env['device']} ({env['cpus']} CPUs available to this process)",
        f"software: jax {env['jax']}" + (f", torch {env['torch']}" if "torch" in env else "")
        + f", python {env['python']}; XLA_FLAGS={env['xla_flags'] or '(none)'}; "
        + xla_flags.describe_inference(xla_flags.inference_options())
        + (f"; {env['allocator']}" if "allocator" in env else ""),
        f"protocol: inference forward (BN statistics, no aux heads), random input, {warmup} warm-up + "
        f"{iterations} timed iterations, median latency [p10, p90]; FPS = batch / median; "
        "JAX: one jit program, compiled ahead of time, block_until_ready; PyTorch: eager, eval(), "
        "inference_mode(), NCHW, same weights, same threads, iterations alternating with JAX",
        "others %: median share of the machine's CPU time used by other processes during the timed "
        "iterations (0 = quiet machine; above ~10 the latencies are inflated, the PyTorch ones the most)",
        "GFLOPs: XLA's count of the network's forward (models.summary.flops; a multiply-add is 2 FLOPs)",
    ]
    if "torch_device" in env or not env["device"].startswith("cpu"):  # the CPU protocol stays as it was
        lines.append(f"on a GPU: JAX on {env['device']}; PyTorch on {env.get('torch_device', 'cpu')}, module and "
                     "input there, cudnn.benchmark, torch.cuda.synchronize() ending every iteration; bfloat16: JAX "
                     "float32 parameters with bfloat16 compute, PyTorch module and input .to(bfloat16); "
                     "'thr' and 'others %' describe the host CPU")
    if torch_compile:
        lines.append("torch-compile: the same PyTorch module under torch.compile(module, dynamic=False) (inductor, "
                     "default mode, the whole forward), inference_mode(); compile s = first call - median latency; "
                     f"logits compared with JAX's and with eager PyTorch's; {torch_compile}")
    if quiet_percent is not None:
        lines.append(f"quiet iterations only: an iteration counts when others % <= {quiet_percent:g}; 'rounds' is "
                     "how many were timed to get them (all are used, and marked, if too few were quiet)")
    if load is not None:
        lines.append(f"load average (1, 5, 15 min) at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                     f" on {env['logical_cpus']} CPUs (other processes compete for the CPU when this exceeds ~0)")
    return "\n".join(lines)


def format_results(results: Sequence[SpeedResult]) -> str:
    """A table of results; for each JAX/PyTorch pair the speed-up (torch latency / jax latency)."""
    header = (f"{'framework':<13} {'model':<14} {'input (NxHxW)':<15} {'precision':<9} {'median ms':>9} "
              f"{'p10':>8} {'p90':>8} {'min':>8} {'FPS':>7} {'compile s':>9} {'thr':>3} {'params M':>8} {'GFLOPs':>7} "
              f"{'others %':>8} {'rounds':>6}")
    lines = [header, "-" * len(header)]
    jax_latency = {}
    for r in results:
        key = (r.model, r.batch_size, r.height, r.width, r.precision)
        gflops = "" if r.gflops != r.gflops else f"{r.gflops:7.1f}"
        if r.error:
            lines.append(f"{r.framework:<13} {r.model:<14} {f'{r.batch_size}x{r.height}x{r.width}':<15} "
                         f"{r.precision:<9} failed: {r.error}")
            continue
        compile_s = f"{r.compile_seconds:9.1f}" if r.framework != "torch" else f"{'(eager)':>9}"
        line = (f"{r.framework:<13} {r.model:<14} {f'{r.batch_size}x{r.height}x{r.width}':<15} {r.precision:<9} "
                f"{r.latency_ms_median:9.1f} {r.latency_ms_p10:8.1f} {r.latency_ms_p90:8.1f} "
                f"{r.latency_ms_min:8.1f} {r.fps:7.2f} "
                f"{compile_s} {r.threads:3d} {r.params / 1e6:8.2f} {gflops:>7} {r.other_cpu_percent:8.0f} {r.rounds:6d}"
                + (" NOT QUIET" if 0 <= r.quiet_samples < r.iterations else ""))
        if r.framework == "jax":
            jax_latency[key] = r.latency_ms_median
        elif key in jax_latency:
            line += (f"   JAX speed-up x{r.latency_ms_median / jax_latency[key]:.2f} (median)"
                     f" (logits max rel. diff {r.max_rel_diff:.0e}"
                     + (f", to eager {r.max_rel_diff_eager:.0e}; first call {r.first_call_seconds:.1f} s)"
                        if r.framework == "torch-compile" else ")"))
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# PyTorch side


def reference_torch_model(model_name: str, num_classes: int, variables: dict):
    """The PyTorch reference module with ``variables`` loaded, in eval mode."""
    try:
        from bisenet_jax.convert import to_torch_state_dict
        from bisenet_jax.convert.torch_models import build_torch_model
    except ImportError as error:
        raise ImportError(f"--compare-torch needs PyTorch and bisenet_jax.convert.torch_models: {error}. "
                          "Install the torch extra: pip install -e '.[torch]'") from error
    torch_model = build_torch_model(model_name, num_classes, aux_heads=False)
    torch_model.load_state_dict(to_torch_state_dict(variables, model_name, aux_heads=False, as_torch=True))
    return torch_model.eval()


class _TorchRun:
    """A callable running the torch model once on a fixed input; keeps the last output."""

    def __init__(self, module, x, device: str = "cpu"):
        self.module, self.x, self.last, self.device = module, x, None, device

    def __call__(self):
        import torch

        with torch.inference_mode():
            self.last = self.module(self.x)
        torch_synchronize(self.device)
        return self.last

    def output(self) -> np.ndarray:
        return self.last.float().permute(0, 2, 3, 1).cpu().numpy()


def _torch_runner(torch_model, x_nhwc: np.ndarray, precision: str) -> tuple[_TorchRun, float]:
    """A runner for ``torch_model`` on the NCHW version of the input, with JAX's thread count."""
    import torch

    torch.set_num_threads(cpu_count())
    device = torch_device()
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest kernels in the warm-up
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    start = time.perf_counter()
    module = torch_model.to(device, dtype).eval()
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(device, dtype)
    torch_synchronize(device)
    return _TorchRun(module, x, device), time.perf_counter() - start


def _max_rel_diff(jax_logits: jax.Array, torch_logits: np.ndarray) -> float:
    """Sanity check that both frameworks ran the same network on the same input."""
    jax_logits = np.asarray(jax_logits, np.float32)
    return float(np.max(np.abs(jax_logits - torch_logits)) / max(np.max(np.abs(jax_logits)), 1e-12))


def _torch_compile_runner(eager_run: _TorchRun) -> tuple[_TorchRun | None, float, str]:
    """The eager runner's module under ``torch_reference.compile_model``, same input: (runner, seconds of
    its first call, ""), or (None, NaN, the one-line reason) where compiling or running it fails."""
    import copy

    from bisenet_jax.benchmarks import torch_reference

    run = copy.copy(eager_run)
    try:
        run.module = torch_reference.compile_model(eager_run.module)
        start = time.perf_counter()
        run()
        return run, time.perf_counter() - start, ""
    except Exception as error:  # noqa: BLE001 - any compiler failure becomes the row's reason
        return None, float("nan"), torch_reference.one_line(error)


def _torch_compile_result(common: dict, samples: list | None, batch_size: int, iterations: int,
                          quiet_percent: float | None, first_call_seconds: float, error: str, runners: dict,
                          jax_logits: jax.Array, eager: SpeedResult) -> SpeedResult:
    nan = float("nan")
    if samples is None:  # compiling failed: the reason, no times
        stats = {"latency_ms_median": nan, "latency_ms_p10": nan, "latency_ms_p90": nan, "latency_ms_min": nan,
                 "fps": nan, "iterations": 0, "rounds": 0}
        diff = diff_eager = nan
    else:
        stats = _statistics(samples, batch_size, iterations, quiet_percent)
        compiled_logits = runners["torch-compile"].output()
        diff = _max_rel_diff(jax_logits, compiled_logits)
        diff_eager = _max_rel_diff(runners["torch"].output(), compiled_logits)
    return SpeedResult(framework="torch-compile", **common, **stats,
                       compile_seconds=first_call_seconds - stats["latency_ms_median"] / 1e3,
                       threads=eager.threads, params=eager.params, gflops=nan, max_rel_diff=diff,
                       max_rel_diff_eager=diff_eager, first_call_seconds=first_call_seconds, error=error)
