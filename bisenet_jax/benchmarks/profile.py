"""Where the train step's (or inference's) time goes, JAX beside PyTorch, in one set of categories (CPU).

JAX: the step of ``create_train_setup`` (built as ``train_speed`` builds it), compiled and traced
with ``jax.profiler`` for a few steps. XLA:CPU's thunk executor records one event per HLO instruction
it runs (a fusion, a copy, a loop), named after the instruction, on the '/host:CPU' thread lines; an
op's time is the thread time of its events and of the thread-pool tasks it scheduled
(:func:`thunk_times`), joined with the compiled HLO text (opcode, shape, fused computation,
``op_name`` metadata) and put in a category by :func:`classify`. The model's kernel bundle is wrapped
in ``jax.named_scope`` labels (``SCOPES``) so that the CPU forms (shifted-multiply depthwise, scatter-gradient
max pool) can be told from the rest: metadata only, the same program.
PyTorch: ``torch.profiler`` on the reference step (``torch_reference``) with a label around each
phase; each op's self CPU time is classified by :func:`torch_category`. PyTorch computes both
gradients of a convolution in one op: its convolution "backward" is input + kernel gradient. The two
sides' ms are different measures (JAX: every thread's time on the op; PyTorch: the calling thread's):
compare their shares.

Inference (:func:`profile_jax_inference`, :func:`profile_torch_inference`): the same method on the
forward pass that ``inference_speed`` times (no auxiliary heads, random weights), every op a forward one.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import os
import re
import tempfile
from typing import Any, Iterable

import jax
import numpy as np

from bisenet_jax import xla_flags
from bisenet_jax.benchmarks import train_speed
from bisenet_jax.models.kernels import Kernels, get_kernels

FWD, DX, DW, BWD, UPDATE, UNKNOWN = "forward", "input grad", "kernel grad", "backward", "update", "unattributed"
GROUPS = (("conv dense", (FWD, DX, DW, BWD)), ("conv depthwise", (FWD, DX, DW, BWD)), ("batchnorm", (FWD, BWD)),
          ("resize", (FWD, BWD)), ("max pool", (FWD, BWD)), ("loss+OHEM", (FWD, BWD)), ("optimizer", (UPDATE,)),
          ("layout copy", (FWD, BWD, UNKNOWN)), ("other", (FWD, BWD, UPDATE, UNKNOWN)))
CATEGORIES = tuple(f"{group}/{phase}" for group, phases in GROUPS for phase in phases)
SCOPES = {"depthwise_conv": "kernel_depthwise_conv", "max_pool_3x3_s2": "kernel_max_pool", "kth_largest": "kernel_kth",
          "upsample2_conv3x3": "kernel_upsample_conv", "conv": "kernel_conv", "pad_shared": "kernel_pad_shared"}
# A fusion that moves data (a transpose, copy or reverse among its ops) and does none of these is layout.
NOT_LAYOUT = {"reduce", "reduce-window", "convolution", "dot", "gather", "scatter", "sort", "select-and-scatter",
              "while", "conditional", "call", "custom-call"}


# --- The compiled HLO text

@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    opcode: str
    shape: str  # "f32[8,64,80,64]{3,2,1,0}" or a tuple "(f32[...], s32[])"
    op_name: str  # metadata={op_name=...}, "" when absent
    calls: tuple[str, ...]  # the computations a fusion runs
    attrs: str  # operands and attributes: the rest of the line


_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = ")
_OP_NAME = re.compile(r'op_name="((?:[^"\\]|\\.)*)"')


def parse_hlo(text: str) -> tuple[dict[str, Instruction], dict[str, list[Instruction]]]:
    """({instruction name: Instruction}, {computation name: its instructions}) of ``compiled.as_text()``."""
    instructions, computations, current = {}, {}, None
    for line in text.splitlines():
        if not line.startswith(" "):
            header = _HEADER.match(line)
            current = header.group(1) if header else None
            computations.update({current: []} if current else {})
            continue
        match = _INSTRUCTION.match(line)
        if not match or current is None:
            continue
        rest, depth, end = line[match.end():], 0, 0
        if rest.startswith("("):  # a tuple shape: up to its closing parenthesis
            for end, char in enumerate(rest):
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    break
        end = end + 1 if rest.startswith("(") else rest.index(" ")
        shape, (opcode, _, attrs) = rest[:end], rest[end:].strip().partition("(")
        op_name = _OP_NAME.search(attrs)
        instruction = Instruction(match.group(1), opcode, shape, op_name.group(1) if op_name else "",
                                  tuple(re.findall(r"calls=%?([\w.\-]+)", attrs)), attrs)
        computations[current].append(instruction)
        instructions[instruction.name] = instruction
    return instructions, computations


def array_dims(shape: str) -> list[tuple[int, ...]]:
    """The dimensions of each array in an HLO shape: "(f32[2,3]{1,0}, s32[])" -> [(2, 3), ()]."""
    return [tuple(int(d) for d in dims.split(",") if d) for dims in re.findall(r"\[([\d,]*)\]", shape)]


def _squeezed(dims: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(d for d in dims if d != 1))


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What :func:`classify` needs to know about the model behind the HLO."""

    scope: str  # the model's class name: its ops carry "jvp(<scope>)" in op_name ("<scope>/" in a forward)
    batch_size: int
    kernel_shapes: frozenset  # _squeezed dims of every 4-D kernel parameter
    batchnorm_paths: frozenset  # module paths "segment/S3/0/conv1/bn" of the BatchNorm layers
    forward_only: bool = False  # the program is the model's inference forward (no gradient, loss or update)

    @classmethod
    def of(cls, model, params, batch_stats, batch_size: int, *, forward_only: bool = False) -> ModelInfo:
        params = jax.tree_util.tree_flatten_with_path(params)[0]
        stats = jax.tree_util.tree_flatten_with_path(batch_stats)[0]  # every BatchNorm keeps mean, var
        return cls(type(model).__name__, batch_size,
                   frozenset(_squeezed(v.shape) for p, v in params if p[-1].key == "kernel" and v.ndim == 4),
                   frozenset("/".join(k.key for k in p[:-1]) for p, _ in stats), forward_only)


def fused_instructions(instruction: Instruction, computations: dict[str, list[Instruction]]) -> list[Instruction]:
    """The instruction and, for a fusion, every instruction of its fused computations (nested ones too)."""
    found = [instruction]
    for name in instruction.calls if instruction.opcode == "fusion" else ():
        for inner in computations.get(name, ()):
            found.extend(fused_instructions(inner, computations))
    return found


def representative_op_name(instruction: Instruction, computations) -> str:
    """The op_name of the instruction, else of its fused root (or the last fused op that has one)."""
    inner = fused_instructions(instruction, computations)
    return next((i.op_name for i in [inner[0], *reversed(inner[1:])] if i.op_name), "")


def classify(instruction: Instruction, computations: dict[str, list[Instruction]], info: ModelInfo) -> str:
    """The category (one of CATEGORIES) of one HLO instruction the thunk executor ran.

    Convolutions (and dots lowered from ``conv_general_dilated``) first, wherever they are: a kernel
    gradient has a kernel's dimensions (XLA's rewritten kernel-gradient convolutions carry no op_name);
    an input gradient has 'transpose(jvp(' in op_name; grouped or labelled ones are depthwise.
    Otherwise by the op_name of the instruction (or its fused root): 'jvp(<model>)' is the model's
    forward, 'transpose(jvp(<model>))' its backward, other 'jvp(' ops are the loss, ops outside the
    gradient are the optimizer update (grad norm and finite check included; the dropout key: other).
    Inside the model a fusion is what it contains, first of: a labelled kernel (depthwise, max pool,
    the upsampling convolution's kernel gradient and phase bookkeeping),
    a resize (``jax.image.resize``), layout (data movement with elementwise work fused in), an op of a
    BatchNorm layer (by module path). In a forward-only program (``info.forward_only``: inference,
    no jvp in any op_name) every op is a forward one and there is no loss or optimizer.
    """
    inner = fused_instructions(instruction, computations)
    conv = next((i for i in inner if i.opcode == "convolution"
                 or (i.opcode == "dot" and "conv_general_dilated" in i.op_name)), None)
    op_name = (conv.op_name if conv is not None else "") or representative_op_name(instruction, computations)
    backward = "transpose(" in op_name and not info.forward_only
    phase = BWD if backward else FWD
    if conv is not None:
        groups = re.search(r"(?:feature|batch)_group_count=(\d+)", conv.attrs)
        kind = "depthwise" if (groups and int(groups.group(1)) > 1) or SCOPES["depthwise_conv"] in op_name else "dense"
        if info.forward_only:
            return f"conv {kind}/{FWD}"
        if _squeezed(array_dims(conv.shape)[0]) in info.kernel_shapes:
            return f"conv {kind}/{DW}"
        return f"conv {kind}/{DX if backward or 'jvp(' not in op_name else FWD}"  # no jvp: an XLA rewrite
    opcodes = {i.opcode for i in inner[1:]} or {instruction.opcode}
    layout = bool(opcodes & {"copy", "transpose", "reverse"}) and not opcodes & NOT_LAYOUT
    if not op_name.startswith("jit("):  # no metadata, or a jit argument's name ("state.params[...]")
        # A reverse flips a kernel for an input-gradient convolution: only a backward pass has them.
        flip = "reverse" in opcodes and not info.forward_only
        return f"layout copy/{BWD if flip else UNKNOWN}" if layout else f"other/{UNKNOWN}"
    if "jvp(" not in op_name and not info.forward_only:
        return f"other/{UPDATE}" if "threefry" in op_name or "random" in op_name else f"optimizer/{UPDATE}"
    model_scope = f"{info.scope}/" if info.forward_only else f"jvp({info.scope})"
    if model_scope not in op_name:
        return f"other/{FWD}" if info.forward_only else f"loss+OHEM/{phase}"
    paths = [name.split(model_scope, 1)[1].lstrip(")").strip("/").split("/")  # "segment/S3/0/conv1/bn/mul"
             for name in {op_name, *(i.op_name for i in inner)} if model_scope in name]
    if any(SCOPES["depthwise_conv"] in path for path in paths):  # the CPU form: shifted multiplies, own VJP
        batch_like = any(len(d) == 4 and d[0] == info.batch_size for d in array_dims(instruction.shape))
        return f"conv depthwise/{FWD if not backward else DX if batch_like else DW}"
    if any(SCOPES["max_pool_3x3_s2"] in path for path in paths):
        return f"max pool/{phase}"
    if any(SCOPES["upsample2_conv3x3"] in path for path in paths):  # the CPU form's ops other than its convs
        if "dot" in opcodes | {instruction.opcode} and backward:  # its hand-written kernel gradient: a matmul per tap
            return f"conv dense/{DW}"
        return f"layout copy/{phase}"  # building the phase kernel, interleaving the four phases
    if "resize" in op_name:
        return f"resize/{phase}"
    if layout:
        return f"layout copy/{phase}"
    if any("/".join(path[:n]) in info.batchnorm_paths for path in paths for n in range(1, len(path))):
        return f"batchnorm/{phase}"
    return f"other/{phase}"


# --- The JAX side

POOL_TASKS = "(thread-pool tasks of no op)"


def thunk_times(xspace_path: str) -> dict[str, list[float]]:
    """{instruction name: [thread ns, events]} of a trace: the time threads spent on each op.

    An op's time: its events' exclusive time (less the events nested in them on their thread: a while
    loop's body) plus the thread-pool tasks it scheduled, run on any thread (an asynchronous
    convolution's event only launches them), less the ops run inside those tasks. Waits (a thread
    blocked on the step's completion or on an op's tasks) count for nothing. Pool tasks that no op
    scheduled (the executor's own, between ops) are ``POOL_TASKS``. A thread's tasks are its
    'ThreadpoolListener' regions, linked to the op that recorded them by the '_p' / '_c' ids.
    """
    times: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    spawner: dict[int, Any] = {}  # task id -> the op that recorded it, or ("task", the task it ran in)
    regions = []  # (task id, ns of the task not spent in ops, nested tasks or waits)
    for plane in jax.profiler.ProfileData.from_file(xspace_path).planes:
        for line in plane.lines if plane.name == "/host:CPU" else ():
            if line.name == "python":  # the Python thread: dispatch and the wait for the step
                continue
            ops: list[tuple[float, str]] = []  # (end, name) of the op events enclosing this moment
            tasks: list[list] = []  # [start, task id, ns covered] of the open regions
            for start, duration, name, stats in sorted(((e.start_ns, e.duration_ns, e.name, e.stats)
                                                        for e in line.events), key=lambda e: (e[0], -e[1])):
                while ops and ops[-1][0] <= start:
                    ops.pop()
                if name == "ThreadpoolListener::StopRegion" and tasks:
                    begin, task, covered = tasks.pop()
                    regions.append((task, start - begin - covered))
                    duration = start - begin  # the task's time is not its enclosing op's or task's
                elif name == "ThreadpoolListener::Record":
                    spawner[dict(stats).get("_p")] = ops[-1][1] if ops else ("task", tasks[-1][1]) if tasks else None
                elif name == "ThreadpoolListener::StartRegion":
                    tasks.append([start, dict(stats).get("_c"), 0.0])
                # "$..." events are Python functions the tracer saw on a non-Python thread (under load, once in CI:
                # "$<unknown> __enter__"), not XLA's.
                is_op = not name.startswith(("ThreadpoolListener", "ThunkExecutor", "Slinky", "end: ", "$"))
                if (is_op or "wait" in name.lower() or name == "ThreadpoolListener::StopRegion") and duration:
                    if ops:
                        times[ops[-1][1]][0] -= duration
                    elif tasks:
                        tasks[-1][2] += duration
                if is_op:
                    times[name][0] += duration
                    times[name][1] += 1
                    ops.append((start + duration, name))
    for task, ns in regions:
        owner, hops = spawner.get(task), 0
        while isinstance(owner, tuple) and hops < 1000:  # a task recorded by a task: whose was that one
            owner, hops = spawner.get(owner[1]), hops + 1
        times[owner if isinstance(owner, str) else POOL_TASKS][0] += ns  # POOL_TASKS: 0 events
    return dict(times)


def labelled_kernels(kernels: Kernels) -> Kernels:
    """The bundle with each function under ``jax.named_scope(SCOPES[field])``: same ops, labelled op_names."""
    def scoped(fn, label):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with jax.named_scope(label):
                return fn(*args, **kwargs)
        return wrapped
    return Kernels(kernels.name, **{field: scoped(getattr(kernels, field), label) for field, label in SCOPES.items()})


def _summary(times: dict[str, list[float]], details: dict[str, dict], steps: int, wall: list[float],
             traced_wall: list[float], top: int) -> dict[str, Any]:
    """Per step: each category's ms, %, share of the wall time and op count, the sum, the wall times, the
    top ops (``times`` in ns)."""
    categories = {c: {"ms": 0.0, "percent": 0.0, "wall_ms": 0.0, "ops": 0} for c in CATEGORIES}
    for key, (ns, count) in times.items():
        categories[details[key]["category"]]["ms"] += ns / 1e6 / steps
        categories[details[key]["category"]]["ops"] += count
    total, wall_ms = sum(c["ms"] for c in categories.values()), 1e3 * float(np.median(wall))
    for c in categories.values():  # "wall_ms": the category's share of the (unprofiled) wall time
        c["percent"] = 100 * c["ms"] / total if total else 0.0
        c["wall_ms"] = c["percent"] / 100 * wall_ms
    ranked = sorted(times, key=lambda k: -times[k][0])[:top]
    return {"op_sum_ms": total, "wall_ms": wall_ms,
            "traced_wall_ms": 1e3 * float(np.median(traced_wall)), "categories": categories,
            "top_ops": [{"ms": times[k][0] / 1e6 / steps, "count": times[k][1] / steps, **details[k]} for k in ranked]}


def profile_jax(model: str, batch_size: int, height: int, width: int, *, steps: int = 2, warmup: int = 1,
                num_classes: int = 19, dtype: str = "float32", top: int = 20, trace_dir: str | None = None
                ) -> dict[str, Any]:
    """``warmup`` untimed, ``steps`` timed, then ``steps`` traced steps of the JAX train step, classified."""
    if jax.default_backend() != "cpu":
        raise NotImplementedError("the JAX breakdown reads XLA:CPU's thunk events: run it on the CPU backend")
    config = train_speed.benchmark_config(model, num_classes, dtype, batch_size, height, width)
    with config.ignore_type():
        config.model.kernels = labelled_kernels(get_kernels(config.model.kernels))
    batch = train_speed.random_batch(batch_size, height, width, num_classes)
    compiled = train_speed.compile_jax_step(config, batch)
    state = compiled.setup.state  # read before a step donates it
    info = ModelInfo.of(compiled.setup.model, state.params, state.batch_stats, batch_size)
    return {**_traced(compiled.run, compiled.compiled.as_text(), info, steps, warmup, top, trace_dir),
            "compile_seconds": compiled.compile_seconds,
            "xla_flags_log": xla_flags.describe(compiled.setup.step_options)}


def profile_jax_inference(model: str, batch_size: int, height: int, width: int, *, steps: int = 2,
                          warmup: int = 1, num_classes: int = 19, top: int = 20, trace_dir: str | None = None
                          ) -> dict[str, Any]:
    """The same breakdown for the model's inference forward as ``scripts/benchmark_speed.py`` times it
    (``inference_speed``: random weights, no auxiliary heads, float32, one ``jax.jit`` program):
    ``warmup`` untimed, ``steps`` timed, then ``steps`` traced calls; every category is a forward one."""
    from bisenet_jax.benchmarks import inference_speed
    from bisenet_jax.models import create_model

    if jax.default_backend() != "cpu":
        raise NotImplementedError("the JAX breakdown reads XLA:CPU's thunk events: run it on the CPU backend")
    net = create_model(model, num_classes, dtype="float32", aux_heads=False,
                       kernels=labelled_kernels(get_kernels("auto")))
    variables = jax.device_put(inference_speed.random_variables(net, (1, 64, 64, 3)))
    x = jax.device_put(np.random.default_rng(0).standard_normal((batch_size, height, width, 3)).astype(np.float32))
    compiled, compile_seconds = inference_speed.compile_jax_forward(net, variables, x)
    info = ModelInfo.of(net, variables["params"], variables.get("batch_stats", {}), batch_size, forward_only=True)

    def forward():
        compiled(variables, x).block_until_ready()

    return {**_traced(forward, compiled.as_text(), info, steps, warmup, top, trace_dir),
            "compile_seconds": compile_seconds,
            "xla_flags_log": f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '').strip() or '(none)'}; "
                             + xla_flags.describe_inference(xla_flags.inference_options())}


def _traced(run, hlo_text: str, info: ModelInfo, steps: int, warmup: int, top: int,
            trace_dir: str | None) -> dict[str, Any]:
    """``warmup`` untimed and ``steps`` timed calls of ``run`` (the compiled program of ``hlo_text``,
    waited for), then ``steps`` traced ones: their thunk times, each instruction classified
    (:func:`_summary`), and ``unmatched``, the events of no instruction."""
    wall = train_speed.step_times(run, warmup, steps)
    with tempfile.TemporaryDirectory() as scratch:
        trace_dir = trace_dir or scratch
        # No Python tracer: its events are Python functions, not XLA ops, on every Python thread of the process
        # (under pytest-xdist, execnet's too), and tracing them only slows the traced steps.
        options = jax.profiler.ProfileOptions()
        options.python_tracer_level = 0
        jax.profiler.start_trace(trace_dir, profiler_options=options)
        try:
            traced_wall = train_speed.step_times(run, 0, steps)
        finally:
            jax.profiler.stop_trace()
        xspace = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
        times = thunk_times(xspace[-1])
    instructions, computations = parse_hlo(hlo_text)
    details = {name: {"name": name, "category": f"other/{UNKNOWN}", "opcode": "?", "shape": "", "op_name": ""}
               for name in times}  # POOL_TASKS, and any event of no instruction
    for name in set(times) & set(instructions):
        inst = instructions[name]
        details[name].update(category=classify(inst, computations, info), opcode=inst.opcode, shape=inst.shape,
                             op_name=representative_op_name(inst, computations))
    return {**_summary(times, details, steps, wall, traced_wall, top),
            "unmatched": sorted(set(times) - set(instructions) - {POOL_TASKS})}


# --- The PyTorch side

LABEL = "bisenet_profile::"
_TORCH_KINDS = (("conv", "conv"), ("batch_norm", "batchnorm"), ("upsample", "resize"), ("max_pool", "max pool"))
_TORCH_LAYOUT = {"aten::copy_", "aten::contiguous", "aten::clone", "aten::permute", "aten::transpose",
                 "aten::_to_copy", "aten::to"}


def torch_category(chain: list[tuple[str, list]]) -> str:
    """The category of a torch op from ``chain``: (name, input shapes) of the op and of the ranges
    enclosing it, innermost first; the phase labels are those of :func:`_labelled_torch_step`.
    A depthwise convolution's weight is (C * m, 1, k, k) with C > 1 input channels."""
    label = next((name[len(LABEL):] for name, _ in chain if name.startswith(LABEL)), None)
    if label in (None, "loss", "loss_backward", "optimizer"):
        return {None: f"other/{UNKNOWN}", "loss": f"loss+OHEM/{FWD}", "loss_backward": f"loss+OHEM/{BWD}",
                "optimizer": f"optimizer/{UPDATE}"}[label]
    phase = FWD if label == "forward" else BWD
    for name, shapes in chain:  # the innermost aten op that says what the work is
        if name.startswith(LABEL):
            break
        for key, group in _TORCH_KINDS if name.startswith("aten::") and "convert" not in name else ():
            if key in name and group == "conv" and len(shapes) >= 3:
                inp, weight = (shapes[1], shapes[2]) if "backward" in name else (shapes[0], shapes[1])
                depthwise = len(weight) == 4 and len(inp) == 4 and weight[1] == 1 and inp[1] > 1
                return f"conv {'depthwise' if depthwise else 'dense'}/{phase}"
            if key in name and group != "conv":
                return f"{group}/{phase}"
    return f"layout copy/{phase}" if chain[0][0] in _TORCH_LAYOUT else f"other/{phase}"


def _labelled_torch_step(torch_reference, net, optimizer, images, labels, loss_config) -> None:
    """``torch_reference.train_step`` with a label around each phase; the backward in two calls, the
    loss's (to the logits), then the model's: the same operations, told apart."""
    import torch
    from torch.profiler import record_function

    with record_function(LABEL + "forward"):
        logits, aux_logits = net(images)
    with record_function(LABEL + "loss"):
        loss, _ = torch_reference.segmentation_loss(logits, aux_logits, labels, loss_config, train_speed.IGNORE_LABEL)
    with record_function(LABEL + "optimizer"):
        optimizer.zero_grad(set_to_none=True)
    outputs = (logits, *aux_logits)
    with record_function(LABEL + "loss_backward"):
        grads = torch.autograd.grad(loss, outputs)
    with record_function(LABEL + "model_backward"):
        torch.autograd.backward(outputs, grads)
    with record_function(LABEL + "optimizer"):
        optimizer.step()


def profile_torch(model: str, batch_size: int, height: int, width: int, *, steps: int = 2, warmup: int = 1,
                  num_classes: int = 19, num_threads: int = 0, top: int = 20) -> dict[str, Any]:
    """``warmup`` untimed and ``steps`` timed steps of the benchmark's PyTorch step, then ``steps``
    profiled ones of :func:`_labelled_torch_step`, each op's self CPU time classified."""
    from torch.profiler import ProfilerActivity, profile
    from bisenet_jax.benchmarks import torch_reference

    torch_reference.set_threads(num_threads)
    config = train_speed.benchmark_config(model, num_classes, "float32", batch_size, height, width)
    net = torch_reference.reference_model(config).train()
    optimizer = torch_reference.create_optimizer(net, config.optimizer)
    images, labels = torch_reference.to_torch(train_speed.random_batch(batch_size, height, width, num_classes))
    wall = train_speed.step_times(lambda: torch_reference.train_step(
        net, optimizer, images, labels, config.loss, train_speed.IGNORE_LABEL), warmup, steps)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        traced_wall = train_speed.step_times(
            lambda: _labelled_torch_step(torch_reference, net, optimizer, images, labels, config.loss), 0, steps)
    return _torch_summary(prof, steps, wall, traced_wall, top)


def profile_torch_inference(model: str, batch_size: int, height: int, width: int, *, steps: int = 2,
                            warmup: int = 1, num_classes: int = 19, num_threads: int = 0, top: int = 20
                            ) -> dict[str, Any]:
    """The PyTorch side of :func:`profile_jax_inference`: the eager reference module in eval mode under
    ``torch.inference_mode`` with the random weights ``scripts/benchmark_speed.py --compare-torch`` loads
    (``inference_speed``, which times it the same way), each op's self CPU time classified (all forward)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    from bisenet_jax.benchmarks import inference_speed, torch_reference
    from bisenet_jax.models import create_model

    torch_reference.set_threads(num_threads)
    net = create_model(model, num_classes, dtype="float32", aux_heads=False)
    variables = inference_speed.random_variables(net, (1, 64, 64, 3))
    module = inference_speed.reference_torch_model(model, num_classes, variables)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch_size, 3, height, width)).astype(np.float32))

    def forward():
        with torch.inference_mode(), record_function(LABEL + "forward"):
            module(x)

    wall = train_speed.step_times(forward, warmup, steps)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        traced_wall = train_speed.step_times(forward, 0, steps)
    return _torch_summary(prof, steps, wall, traced_wall, top)


def _torch_summary(prof, steps: int, wall, traced_wall, top: int) -> dict[str, Any]:
    """:func:`_summary` of a ``torch.profiler`` run, each event's self CPU time in its :func:`torch_category`."""
    times: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    details = {}
    for event in prof.events():
        chain, parent = [], event
        while parent is not None:
            chain.append((parent.name, list(parent.input_shapes or [])))
            parent = parent.cpu_parent
        category = torch_category(chain)
        key = f"{category} {event.name} {chain[0][1]}"
        times[key][0] += event.self_cpu_time_total * 1e3  # us -> ns
        times[key][1] += 1
        details[key] = {"name": event.name, "category": category, "opcode": "", "shape": str(chain[0][1]),
                        "op_name": ""}
    return _summary(times, details, steps, wall, traced_wall, top)
