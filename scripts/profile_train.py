"""Where the train step's (or, with --inference, the forward's) time goes: JAX by category, PyTorch beside it.

  python scripts/profile_train.py --model bisenetv1_r18 --batch-size 8 --crop 256x320 --steps 2 --torch

With --inference, the same for the model's inference forward as scripts/benchmark_speed.py times it
(no auxiliary heads, random weights; --batch-size and --crop are the input's):

  python scripts/profile_train.py --inference --model bisenetv1_x39 --batch-size 1 --crop 512x1024 --torch

Random data, the step of scripts/benchmark_train.py (or the forward of scripts/benchmark_speed.py); the method
is in bisenet_jax/benchmarks/profile.py.
"""
from __future__ import annotations

import argparse
import json
import os

from bisenet_jax import allocator


NOTES = ("JAX ms are thread time: an op's own event plus the thread-pool tasks it scheduled, on any thread "
         "(XLA:CPU runs independent ops at once and splits a convolution over its threads), so the JAX sum "
         "approaches threads x wall; PyTorch ms are self CPU time on the calling thread (an op's intra-op threads "
         "not added), so its sum is at most the wall. Compare the shares: ~wall = % x the unprofiled wall per "
         "step. JAX fusions are classified by what they contain: a BatchNorm apply + ReLU is batchnorm, one "
         "written in a convolution's layout (fused with a transpose) is layout copy; PyTorch's ReLU is its own op "
         "(other). Nearest x2 upsampling by jnp.repeat is fused into its neighbours (JAX: not resize).")


def format_report(report: dict, top: int = 20) -> str:
    """The table of ``report["jax"]`` (``profile.profile_jax`` or ``profile_jax_inference``) beside
    ``report["torch"]`` (``profile_torch`` or ``profile_torch_inference``)."""
    from bisenet_jax.benchmarks import machine
    from bisenet_jax.benchmarks.profile import BWD, DW, DX, FWD, GROUPS, UPDATE

    sides = [s for s in ("jax", "torch") if report.get(s)]
    inference = report.get("mode") == "inference"
    what, calls = ("inference profile", "calls") if inference else ("train-step profile", "steps")
    lines = [f"{what}: {report['model']}, batch {report['batch_size']}, crop {report['crop']}, "
             f"{report['steps']} profiled {calls}; {machine.cpu_count()} CPUs ({machine.cpu_name()}); "
             f"load {machine.load_average()}", (report.get("jax") or {}).get("xla_flags_log") or f"XLA_FLAGS: {report['xla_flags']}",
             f"{'per step':<30}" + "".join(f"{t + ' ms':>13}{'%':>6}{'~wall':>8}" for s, t in
                                           (("jax", "JAX"), ("torch", "PyTorch")) if s in sides)]

    def row(label, values, share=True):
        cells = []
        for s, v in zip(sides, values):
            percent = 100 * v / report[s]["op_sum_ms"] if v is not None else 0.0
            cells.append(f"{'-':>13}{'':>14}" if v is None else f"{v:>13.1f}" + (
                f"{percent:>6.1f}{percent / 100 * report[s]['wall_ms']:>8.1f}" if share else f"{'':>14}"))
        return f"{label:<30}" + "".join(cells)

    for group, phases in GROUPS:
        cells = {p: [report[s]["categories"][f"{group}/{p}"] for s in sides] for p in phases}
        shown = [p for p in phases if any(c["ops"] or c["ms"] for c in cells[p])]
        lines += [row(f"{group} / {p}", [c["ms"] if c["ops"] or c["ms"] else None for c in cells[p]]) for p in shown]
        if len(shown) > 1:
            lines.append(row(f"{group} / total", [sum(cells[p][i]["ms"] for p in phases) for i in range(len(sides))]))
    totals = (("all forward", (FWD,)), ("all backward", (DX, DW, BWD)), ("all update", (UPDATE,)))
    for label, phases in totals[:1] if inference else totals:
        lines.append(row(label, [sum(v["ms"] for k, v in report[s]["categories"].items() if k.split("/")[1] in phases)
                                 for s in sides]))
    for key, label in (("op_sum_ms", "sum of op times"), ("traced_wall_ms", "wall per step, profiled"),
                       ("wall_ms", "wall per step, unprofiled")):
        lines.append(row(label, [report[s].get(key) for s in sides], share=False))
    lines.append("notes: " + NOTES)
    for s in sides:
        lines.append(f"top {top} {s} ops: ms/step, events/step, category, op, shape, op_name")
        lines += [f"{op['ms']:8.1f} {op['count']:6.1f}  {op['category']:<26} {op['name'][:30]:<30} "
                  f"{op['shape'][:36]:<36} {op['op_name'][-90:]}" for op in report[s]["top_ops"][:top]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bisenetv1_r18")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", default="256x320",
                        help="HEIGHTxWIDTH of the training crop (of the input with --inference)")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed and traced ones")
    parser.add_argument("--steps", type=int, default=2,
                        help="timed steps (forward calls with --inference), then as many profiled ones")
    parser.add_argument("--torch", action="store_true", help="profile the PyTorch reference step (or forward) too")
    parser.add_argument("--inference", action="store_true",
                        help="profile the inference forward (batch --batch-size at --crop) instead of the train step")
    parser.add_argument("--top", type=int, default=20, help="list the N longest ops of each side")
    parser.add_argument("--json", default="", help="write the report to this file")
    parser.add_argument("--trace-dir", default="", help="keep the JAX trace here (TensorBoard / Perfetto)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.crop.lower().split("x"))

    from bisenet_jax.benchmarks import profile

    common = dict(steps=args.steps, warmup=args.warmup, num_classes=args.num_classes, top=args.top)
    profile_jax, profile_torch = ((profile.profile_jax_inference, profile.profile_torch_inference) if args.inference
                                  else (profile.profile_jax, profile.profile_torch))
    report = {"model": args.model, "mode": "inference" if args.inference else "train step",
              "batch_size": args.batch_size, "crop": f"{height}x{width}", "steps": args.steps,
              "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "jax": profile_jax(args.model, args.batch_size, height, width, trace_dir=args.trace_dir or None, **common)}
    if args.torch:
        report["torch"] = profile_torch(args.model, args.batch_size, height, width, **common)
    print(format_report(report, args.top))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    allocator.enable()  # before any output: may re-execute this command once
    raise SystemExit(main())
