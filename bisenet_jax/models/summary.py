"""Model inspection: parameter counts, a parameter table, and FLOPs from XLA's cost analysis.

FLOPs are what XLA reports for the compiled program: a multiply-add counts as 2 FLOPs, and
element-wise work (BatchNorm, activations, resizing) is counted too. Papers usually quote
multiply-adds ("FLOPs" in most segmentation papers are MACs), so compare their figures with
``flops / 2`` (GMACs), not with ``flops``. Zero-padding taps of a convolution are not counted.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
from flax import traverse_util

from bisenet_jax import xla_flags
from bisenet_jax.models.kernels import XLA_KERNELS

# Figures of the BiSeNetV1 paper's speed table at 640x360 (Yu et al., ECCV 2018; approx.). The paper's
# "FLOPs" are multiply-adds, so they sit next to our GMACs.
PAPER_FIGURES: dict[str, dict[str, Any]] = {
    "bisenetv1_x39": {"params_m": 5.8, "gflops": 2.9, "resolution": (360, 640)},
    "bisenetv1_r18": {"params_m": 49.0, "gflops": 10.8, "resolution": (360, 640)},
}


def count_params(variables: Mapping[str, Any]) -> int:
    """Number of trainable parameters: the ``params`` collection (BN statistics are not parameters).

    Accepts a full variables dict (``{"params": ..., "batch_stats": ...}``) or a bare params tree;
    leaves may be arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``).
    """
    tree = variables["params"] if "params" in variables else variables
    return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))


def parameter_table(variables: Mapping[str, Any], depth: int | None = None) -> str:
    """A text table of the parameters, grouped by top-level module with a subtotal each.

    ``depth=None`` lists every parameter (path, shape, count); ``depth=k`` sums the parameters of
    each module ``k`` levels deep into one row (the shape column then says how many tensors).
    """
    params = variables["params"] if "params" in variables else variables
    flat = traverse_util.flatten_dict(dict(params))
    rows: list[tuple[str, str, int]] = []
    groups: dict[str, list[tuple[str, str, int]]] = {}
    for path, leaf in flat.items():
        groups.setdefault(path[0], []).append(("/".join(path), str(tuple(leaf.shape)), int(leaf.size)))
    if depth is not None:
        for top, entries in groups.items():
            merged: dict[str, list[int]] = {}
            for path, _, size in entries:
                key = "/".join(path.split("/")[:depth])
                merged.setdefault(key, []).append(size)
            groups[top] = [(key, f"{len(sizes)} tensors", sum(sizes)) for key, sizes in merged.items()]

    width = max([len(p) for entries in groups.values() for p, _, _ in entries] + [24]) + 2
    shape_width = max([len(s) for entries in groups.values() for _, s, _ in entries] + [5]) + 2
    line = "-" * (width + shape_width + 14)
    out = [f"{'module / parameter':<{width}}{'shape':<{shape_width}}{'params':>14}", line]
    total = 0
    for top, entries in groups.items():
        subtotal = sum(size for _, _, size in entries)
        total += subtotal
        out += [f"{p:<{width}}{s:<{shape_width}}{size:>14,}" for p, s, size in entries]
        out += [f"{'  ' + top + ' subtotal':<{width + shape_width}}{subtotal:>14,}", line]
    out.append(f"{'total':<{width + shape_width}}{total:>14,}")
    if "batch_stats" in variables:
        stats = sum(int(leaf.size) for leaf in jax.tree.leaves(variables["batch_stats"]))
        out.append(f"(plus {stats:,} BatchNorm statistics in batch_stats, which are not parameters)")
    return "\n".join(out)


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _flops_of(cost: Any) -> float:
    """The ``flops`` entry of a cost analysis, which is a dict or (older JAX) a list of dicts."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        raise RuntimeError(f"XLA's cost analysis has no 'flops' entry on this backend ({jax.default_backend()}): {cost!r}")
    return float(cost["flops"])


def _with_xla_kernels(model: nn.Module) -> nn.Module:
    """``model`` computing with XLA's own ops whatever its ``kernels``: the convolution's count, as
    papers report it (the CPU depthwise form would also count its zero-padding taps), on every backend."""
    if any(field.name == "kernels" for field in dataclasses.fields(model)):
        return model.clone(kernels=XLA_KERNELS)
    return model


def flops(model: nn.Module, variables: Mapping[str, Any], input_shape: Sequence[int]) -> float:
    """FLOPs of one eval-mode forward pass of ``model`` on an NHWC float32 ``input_shape``.

    From XLA's cost analysis of the compiled program (a multiply-add is 2 FLOPs; see the module
    docstring), with XLA's own kernels. ``variables`` may be arrays or shapes
    (``jax.eval_shape(model.init, ...)``).
    """
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    model = _with_xla_kernels(model)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(_shapes(variables), x)
    # XLA's cost analysis does not see inside YNNPACK fusions (the train step's CPU option of
    # bisenet_jax/xla_flags.py, or a user's XLA_FLAGS), so on CPU the count is taken without them.
    options = {xla_flags.YNN_FUSION_TYPE: ""} if jax.default_backend() == "cpu" else None
    return _flops_of(lowered.compile(compiler_options=options).cost_analysis())


def _top_level_calls(model: nn.Module, variables: Mapping[str, Any], x: jax.ShapeDtypeStruct,
                     train: bool) -> dict[str, tuple[nn.Module, tuple, dict]]:
    """{name: (module, args, kwargs)} of the model's direct submodule calls, args as shapes."""
    calls: dict[str, tuple[nn.Module, tuple, dict]] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and len(module.path) == 1 and module.path[0] not in calls:
            as_shape = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if isinstance(a, jax.Array) else a
            calls[module.path[0]] = (module.clone(parent=None), jax.tree.map(as_shape, args),
                                     jax.tree.map(as_shape, kwargs))
        return next_fun(*args, **kwargs)

    def forward(v, x):
        if train:
            return model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        return model.apply(v, x, train=False)

    with nn.intercept_methods(record):
        jax.eval_shape(forward, _shapes(variables), x)
    return calls


def _call_flops(module: nn.Module, variables: Mapping[str, Any], args: tuple, kwargs: dict, train: bool) -> float:
    """FLOPs of one submodule call, from the cost analysis of the lowered (not compiled) program."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dynamic = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.ShapeDtypeStruct)]

    def call(v, arrays):
        filled = list(leaves)
        for i, array in zip(dynamic, arrays):
            filled[i] = array
        a, kw = jax.tree.unflatten(treedef, filled)
        if train:
            return module.apply(v, *a, **kw, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        return module.apply(v, *a, **kw)

    lowered = jax.jit(call).lower(_shapes(variables), [leaves[i] for i in dynamic])
    return _flops_of(lowered.cost_analysis())


def module_flops(model: nn.Module, variables: Mapping[str, Any], input_shape: Sequence[int]
                 ) -> dict[str, tuple[float, bool]]:
    """{top-level module: (FLOPs, training_only)} for one forward pass on ``input_shape``.

    Modules of the eval forward are costed in eval mode; modules that run only in training (the
    auxiliary heads) are costed in training mode. Costs come from the lowered (pre-optimisation)
    HLO with XLA's own kernels, which agrees with the compiled total of ``flops`` to about 1%.
    """
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    model = _with_xla_kernels(model)
    eval_calls = _top_level_calls(model, variables, x, train=False)
    train_calls = _top_level_calls(model, variables, x, train=True)
    result = {}
    for name, (module, args, kwargs) in train_calls.items():
        training_only = name not in eval_calls
        if not training_only:
            module, args, kwargs = eval_calls[name]
        sub_variables = {col: tree[name] for col, tree in variables.items() if name in tree}
        result[name] = (_call_flops(module, sub_variables, args, kwargs, training_only), training_only)
    return result


def model_summary(name: str, num_classes: int, input_shape: Sequence[int], **options: Any) -> str:
    """A table of a registered model's top-level modules: parameters and forward GFLOPs.

    ``input_shape`` is the NHWC input, e.g. ``(1, 360, 640, 3)``; ``options`` go to
    ``create_model`` (e.g. ``aux_heads=False``). Nothing is computed on real data: shapes only.
    """
    from bisenet_jax.models import create_model  # avoid an import cycle with the registry

    model = create_model(name, num_classes, **options)
    input_shape = tuple(input_shape)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape, jnp.float32), train=False))
    per_module = module_flops(model, variables, input_shape)
    total_flops = flops(model, variables, input_shape)
    params = variables["params"]

    header = f"{'module':<14}{'params':>14}{'share':>8}{'GFLOPs':>10}{'GMACs':>9}  note"
    line = "-" * (len(header) + 14)
    out = [f"{name}, {num_classes} classes, input {input_shape} (NHWC), eval forward", header, line]
    total_params = count_params(variables)
    eval_params = 0
    order = list(per_module) + [m for m in params if m not in per_module]  # call order
    for module_name in order:
        n = count_params(params.get(module_name, {}))
        module_cost, training_only = per_module.get(module_name, (float("nan"), False))
        eval_params += 0 if training_only else n
        out.append(f"{module_name:<14}{n:>14,}{n / total_params:>8.1%}{module_cost / 1e9:>10.3f}"
                   f"{module_cost / 2e9:>9.3f}  {'training only (auxiliary head)' if training_only else ''}")
    out.append(line)
    out.append(f"{'eval total':<14}{eval_params:>14,}{'':>8}{total_flops / 1e9:>10.3f}{total_flops / 2e9:>9.3f}"
               "  compiled program")
    if eval_params != total_params:
        out.append(f"{'with aux':<14}{total_params:>14,}")
    out.append("FLOPs from XLA's cost analysis: a multiply-add counts 2, so GMACs = GFLOPs / 2 (papers quote MACs).")
    return "\n".join(out)


def model_stats(names: Sequence[str], height: int, width: int, num_classes: int = 19) -> list[dict[str, Any]]:
    """Parameters and eval-forward FLOPs of each named model at ``height`` x ``width`` (batch 1)."""
    from bisenet_jax.models import create_model

    rows = []
    input_shape = (1, height, width, 3)
    for name in names:
        model = create_model(name, num_classes)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), train=False))
        without_aux = jax.eval_shape(lambda: create_model(name, num_classes, aux_heads=False).init(
            jax.random.key(0), jnp.zeros(input_shape), train=False))
        rows.append({
            "model": name,
            "params": count_params(variables),
            "params_eval": count_params(without_aux),
            "flops": flops(model, variables, input_shape),
            "paper": PAPER_FIGURES.get(name) if (height, width) == (360, 640) else None,
        })
    return rows


def format_stats_table(rows: Sequence[Mapping[str, Any]], height: int, width: int) -> str:
    """A Markdown table of ``model_stats`` rows next to the paper's figures (where it has any)."""
    out = [
        f"| model ({width}x{height}) | params (M) | params, no aux (M) | GFLOPs (XLA) | GMACs | paper params (M) | paper GFLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        paper = row["paper"]
        out.append(
            f"| {row['model']} | {row['params'] / 1e6:.2f} | {row['params_eval'] / 1e6:.2f} | "
            f"{row['flops'] / 1e9:.2f} | {row['flops'] / 2e9:.2f} | "
            f"{paper['params_m'] if paper else '-'} | {paper['gflops'] if paper else '-'} |")
    return "\n".join(out)
