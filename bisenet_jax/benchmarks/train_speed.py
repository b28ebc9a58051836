"""Train-step throughput and compile time, JAX against the PyTorch reference on the same machine.

Protocol: one model, one global batch of random normalised images and random labels at a fixed
crop; the full training step (forward with auxiliary heads, OHEM loss on every head, backward,
SGD update with the recipe's parameter groups). JAX: the jitted, donated step of the one training
setup (``bisenet_jax.train.setup.create_train_setup``) on a 1-device mesh, compiled once (compile
time reported, never timed); PyTorch: the reference module of ``bisenet_jax.convert.torch_models``
in eager training mode with the same loss and SGD groups (``torch_reference.train_step``),
``torch.set_num_threads`` = the CPUs available. ``warmup`` untimed steps, then ``steps`` timed
ones; the median step time gives images/s. ``peak_rss_mb`` is the process's peak memory when the
side finished (the JAX side runs first).

Alternating (``alternating_train_speed``, ``scripts/benchmark_train.py --alternate ROUNDS``, six rounds by
default with ``--compare-torch``): both sides
built and warmed up in one process, then timed in rounds of ``steps`` steps each, JAX first in even
rounds and PyTorch first in odd ones; the ratio over all timed steps and each round's. On the shared VMs
this project is measured on, the machine's speed drifts in stretches of seconds to minutes and moves
the two sides by different amounts (docs/profile.md, session 51), so a comparison of two back-to-back
blocks can land on either side of such a stretch; rounds of a few seconds pair them.

On a GPU (JAX's default backend, whatever it is; ``device_protocol`` says it with the numbers): the
same JAX step on that device; PyTorch on CUDA when it has it (``machine.torch_device``), eager, model
and batch on the GPU, ``cudnn.benchmark`` on (XLA autotunes its convolutions too), and
``torch.cuda.synchronize()`` ending every step. bfloat16 on both sides is mixed precision: JAX's
model ``dtype`` (float32 parameters and optimizer, bfloat16 compute), PyTorch's ``torch.autocast`` to
bfloat16 over forward and loss. On the CPU the PyTorch side stays float32 (``torch_precision``), as
in every CPU figure recorded so far.
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from bisenet_jax import xla_flags
from bisenet_jax.benchmarks import machine
from bisenet_jax.train.config import base_config
from bisenet_jax.train.setup import TrainSetup, create_train_setup

IGNORE_LABEL = 255


def random_batch(batch_size: int, height: int, width: int, num_classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.standard_normal((batch_size, height, width, 3), dtype=np.float32),
            "label": rng.integers(0, num_classes, (batch_size, height, width)).astype(np.int32)}


def benchmark_config(model: str, num_classes: int, dtype: str, batch_size: int, height: int, width: int):
    config = base_config()
    config.model.name = model
    config.model.num_classes = num_classes
    config.model.dtype = dtype
    config.data.crop_size = (height, width)
    config.train.batch_size = batch_size
    config.mesh.num_devices = 1
    config.optimizer.warmup_steps = 10
    config.optimizer.total_steps = 1000
    return config


def step_times(step: Callable[[], None], warmup: int, steps: int) -> list[float]:
    """Wall seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


class CompiledStep(NamedTuple):
    run: Callable[[], None]  # one train step on the fixed batch, waited for
    compile_seconds: float
    setup: TrainSetup  # before the first run (its state is donated to the step)
    compiled: Any  # the ahead-of-time compiled step (``as_text()`` for its HLO)


def compile_jax_step(config, batch: dict[str, np.ndarray], ignore_label: int = IGNORE_LABEL) -> CompiledStep:
    """``config``'s train step (``create_train_setup``), compiled ahead of time (timed) on ``batch``,
    and a closure running one step on it: what every JAX step measurement of the benchmarks times."""
    setup = create_train_setup(config, ignore_label=ignore_label)
    batch = jax.device_put(batch, setup.batch_sharding)
    start = time.perf_counter()
    compiled = setup.train_step.lower(setup.state, batch).compile()
    compile_seconds = time.perf_counter() - start
    state = setup.state

    def run():
        nonlocal state
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])

    return CompiledStep(run, compile_seconds, setup, compiled)


def build_jax_step(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                   dtype: str = "float32") -> CompiledStep:
    """The benchmark's JAX train step (``benchmark_config``) compiled on a fixed random batch."""
    return compile_jax_step(benchmark_config(model, num_classes, dtype, batch_size, height, width),
                            random_batch(batch_size, height, width, num_classes))


def _jax_result(step: CompiledStep, model, batch_size, height, width, dtype, times) -> dict[str, Any]:
    result = _result("jax", model, batch_size, height, width, dtype, times, step.compile_seconds)
    return {**result, "xla_options": xla_flags.describe(step.setup.step_options, init=step.setup.init_options)}


def jax_train_speed(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                    dtype: str = "float32", warmup: int = 2, steps: int = 5) -> dict[str, Any]:
    step = build_jax_step(model, batch_size, height, width, num_classes=num_classes, dtype=dtype)
    return _jax_result(step, model, batch_size, height, width, dtype, step_times(step.run, warmup, steps))


def build_torch_step(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                     num_threads: int = 0, precision: str = "float32", device: str | None = None) -> Callable[[], None]:
    """The PyTorch reference's train step on a fixed random batch, as a closure that waits for it.

    ``precision`` "bfloat16": autocast; ``device`` "cpu" or "cuda", default ``machine.torch_device()``."""
    import torch

    from bisenet_jax.benchmarks import torch_reference

    device = device or machine.torch_device()
    torch_reference.set_threads(num_threads)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest kernels in the warm-up
    config = benchmark_config(model, num_classes, "float32", batch_size, height, width)
    net = torch_reference.reference_model(config).train().to(device)
    optimizer = torch_reference.create_optimizer(net, config.optimizer)
    images, labels = (t.to(device) for t in torch_reference.to_torch(
        random_batch(batch_size, height, width, num_classes)))
    autocast = {"float32": None, "bfloat16": torch.bfloat16}[precision]

    def step():
        torch_reference.train_step(net, optimizer, images, labels, config.loss, IGNORE_LABEL, autocast=autocast)
        machine.torch_synchronize(device)

    return step


def torch_train_speed(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                      warmup: int = 2, steps: int = 5, num_threads: int = 0, precision: str = "float32",
                      device: str | None = None) -> dict[str, Any]:
    """``precision`` "bfloat16": autocast; ``device`` "cpu" or "cuda", default ``machine.torch_device()``."""
    step = build_torch_step(model, batch_size, height, width, num_classes=num_classes, num_threads=num_threads,
                            precision=precision, device=device)
    times = step_times(step, warmup, steps)
    return _result("torch", model, batch_size, height, width, precision, times, 0.0)


def alternate(steps: dict[str, Callable[[], None]], warmup: int, steps_per_round: int, rounds: int,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Times the ``steps`` (side name -> one waited-for step) in alternating rounds.

    Each side first takes ``warmup`` untimed steps; then, ``rounds`` times, every side takes
    ``steps_per_round`` timed steps, the sides in the given order in even rounds and reversed in odd
    ones. A shared VM's speed drifts in stretches of seconds to minutes (docs/profile.md, session 51),
    so two sides timed one after the other can land in different stretches; rounds a few seconds
    long put both sides in nearly the same conditions, and the per-round ratios show how far the
    comparison moved with them. Returns ``times`` (side -> rounds x steps_per_round seconds),
    ``round_medians`` (side -> one median per round) and ``orders`` (the sides' order in each round).
    """
    if rounds < 1 or steps_per_round < 1 or warmup < 0 or not steps:
        raise ValueError(f"alternating rounds need rounds >= 1, steps_per_round >= 1, warmup >= 0 and a step to "
                         f"time, got rounds={rounds}, steps_per_round={steps_per_round}, warmup={warmup}, "
                         f"sides={list(steps)}")
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    orders = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        orders.append(list(order))
        for name in order:
            for _ in range(steps_per_round):
                start = clock()
                steps[name]()
                times[name].append(clock() - start)
    shaped = {name: np.asarray(t).reshape(rounds, steps_per_round) for name, t in times.items()}
    return {"times": {name: t.tolist() for name, t in shaped.items()},
            "round_medians": {name: np.median(t, axis=1).tolist() for name, t in shaped.items()},
            "orders": orders}


def ratio_summary(rounds: dict[str, Any], numerator: str = "jax", denominator: str = "torch") -> dict[str, Any]:
    """``numerator``'s images/s over ``denominator``'s from :func:`alternate`'s rounds: over all timed
    steps (the ratio of the two medians), and per round (its median, min and max), with each side's
    spread (slowest round median / fastest)."""
    a, b = (np.asarray(rounds["times"][side]) for side in (numerator, denominator))
    per_round = np.asarray(rounds["round_medians"][denominator]) / np.asarray(rounds["round_medians"][numerator])
    spread = {side: float(np.max(m) / np.min(m)) for side, m in rounds["round_medians"].items()}
    return {"ratio": float(np.median(b) / np.median(a)), "ratio_round_median": float(np.median(per_round)),
            "ratio_round_min": float(per_round.min()), "ratio_round_max": float(per_round.max()),
            "ratio_each_round": per_round.tolist(), "spread": spread}


def alternating_train_speed(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                            dtype: str = "float32", warmup: int = 2, steps: int = 5, rounds: int = 8,
                            num_threads: int = 0, device: str | None = None) -> dict[str, Any]:
    """JAX's and PyTorch's train steps (as :func:`jax_train_speed` and :func:`torch_train_speed` build
    them) timed in :func:`alternate`'s rounds of ``steps`` steps, JAX first in even rounds: each side's
    ``_result`` row over all its timed steps, and the rounds with :func:`ratio_summary`."""
    jax_step = build_jax_step(model, batch_size, height, width, num_classes=num_classes, dtype=dtype)
    torch_device = device or machine.torch_device()
    precision = torch_precision(dtype, torch_device)
    torch_step = build_torch_step(model, batch_size, height, width, num_classes=num_classes,
                                  num_threads=num_threads, precision=precision, device=torch_device)
    rounds_result = alternate({"jax": jax_step.run, "torch": torch_step}, warmup, steps, rounds)
    flat = {side: np.ravel(t).tolist() for side, t in rounds_result["times"].items()}
    jax_row = _jax_result(jax_step, model, batch_size, height, width, dtype, flat["jax"])
    torch_row = _result("torch", model, batch_size, height, width, precision, flat["torch"], 0.0)
    return {"results": [jax_row, torch_row], "rounds": rounds_result,
            "summary": ratio_summary(rounds_result)}


def torch_precision(precision: str, device: str) -> str:
    """The PyTorch side's precision beside JAX's ``precision``: the same on a GPU; float32 on the CPU, as
    in every CPU comparison recorded so far."""
    return precision if device == "cuda" else "float32"


def device_protocol(compare_torch: bool) -> str:
    """What the protocol line adds off the CPU: the devices and how PyTorch is timed there ("" when JAX,
    and PyTorch if compared, run on the CPU, so that CPU output stays as it was)."""
    backend = jax.default_backend()
    torch_device = machine.torch_device() if compare_torch else "cpu"
    if backend == "cpu" and torch_device == "cpu":
        return ""
    text = f"; JAX on {backend} ({jax.devices()[0].device_kind})"
    if compare_torch and torch_device == "cuda":
        import torch

        text += (f"; PyTorch on cuda ({torch.cuda.get_device_name(0)}): eager, model and batch on the GPU, "
                 "cudnn.benchmark, torch.cuda.synchronize() ending every step; bfloat16 = torch.autocast over "
                 "forward and loss (float32 weights and SGD, as JAX's bfloat16 compute dtype)")
    elif compare_torch:
        text += "; PyTorch on cpu"
    return text


def _result(framework, model, batch_size, height, width, dtype, times, compile_seconds) -> dict[str, Any]:
    median = float(np.median(times))
    return {"framework": framework, "model": model, "batch_size": batch_size, "height": height, "width": width,
            "precision": dtype, "step_seconds_median": median, "step_seconds_min": float(np.min(times)),
            "step_seconds_max": float(np.max(times)), "images_per_second": batch_size / median,
            "compile_seconds": compile_seconds, "steps": len(times), "peak_rss_mb": machine.peak_rss_mb()}


def torch_compile_train_speed(model: str, batch_size: int, height: int, width: int, *, num_classes: int = 19,
                              warmup: int = 2, steps: int = 5, num_threads: int = 0,
                              device: str = "cpu") -> dict[str, Any]:
    """The PyTorch step of ``torch_train_speed`` (float32) with the module under ``torch.compile``.

    ``torch_reference.compile_model``: inductor, default mode, static shapes; the module's forward is
    compiled, its backward comes from AOTAutograd, the OHEM loss and the SGD step stay eager, as a user
    would compile a training loop. The first call (compiling forward and backward, and taking one
    step) is timed on its own: ``first_call_seconds``; ``compile_seconds`` is that minus the median
    step. Then ``warmup`` + ``steps`` steps as on the eager side. Where compiling or running fails the
    row carries the one-line ``error`` and NaN times instead of raising.
    """
    from bisenet_jax.benchmarks import torch_reference

    torch_reference.set_threads(num_threads)
    config = benchmark_config(model, num_classes, "float32", batch_size, height, width)
    net = torch_reference.reference_model(config).train().to(device)
    optimizer = torch_reference.create_optimizer(net, config.optimizer)  # the module's own parameter names
    images, labels = (t.to(device) for t in torch_reference.to_torch(
        random_batch(batch_size, height, width, num_classes)))

    def step():
        torch_reference.train_step(compiled, optimizer, images, labels, config.loss, IGNORE_LABEL)
        machine.torch_synchronize(device)

    try:
        compiled = torch_reference.compile_model(net)
        start = time.perf_counter()
        step()
        first_call_seconds = time.perf_counter() - start
        times = step_times(step, warmup, steps)
    except Exception as error:  # noqa: BLE001 - any compiler failure becomes the row's reason
        nan = float("nan")
        return {**_result("torch-compile", model, batch_size, height, width, "float32", [nan], nan),
                "first_call_seconds": nan, "error": torch_reference.one_line(error)}
    median = float(np.median(times))
    return {**_result("torch-compile", model, batch_size, height, width, "float32", times,
                      first_call_seconds - median), "first_call_seconds": first_call_seconds, "error": ""}
