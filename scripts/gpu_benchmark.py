"""The whole GPU comparison, JAX against PyTorch eager: inference and train step of three models, fp32 and bf16.

  bash scripts/gpu_benchmark.sh [RESULTS_DIR]        # on the GPU machine: installs the carried wheels, runs this
  python scripts/gpu_benchmark.py RESULTS_DIR        # where every package is installed
  python scripts/gpu_benchmark.py --quick RESULTS_DIR  # tiny sizes, 1 iteration: the whole path, on the CPU too

It runs the two benchmark scripts as they are, their ``main()`` in this one process (Python, JAX and
PyTorch start once), with ``--compare-torch``:

- inference, ``scripts/benchmark_speed.py``: 1x1024x2048 and 1x512x1024, float32 and bfloat16, per model;
- train step, ``scripts/benchmark_train.py``: V1-R18 and V1-X39 batch 8 at 256x320, V2 batch 8 at
  192x256, float32 and bfloat16; then, while the run is under ``--optional-until`` (300 s), batch 16
  at 512x1024 for each model. No item starts after ``--budget`` (430 s); ``--quick`` has no limits.

Each part's items run in that order, each in a try (an error is recorded and the next item runs);
after each item the results so far are written to RESULTS_DIR/gpu_benchmark.json and
gpu_benchmark.md, so a run cut short still leaves its figures. The markdown table is printed at the end.
The protocols are the scripts' own (bisenet_jax/benchmarks/inference_speed.py, train_speed.py).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import pathlib
import sys
import tempfile
import time
import traceback

SCRIPTS = pathlib.Path(__file__).resolve().parent
MODELS = ("bisenetv1_r18", "bisenetv1_x39", "bisenetv2")
PRECISIONS = ("float32", "bfloat16")

# (inference resolutions, warm-up, iterations; train items (model, batch, crop), large ones, warm-up, steps)
FULL = {"resolutions": ["1024x2048", "512x1024"], "inference_warmup": 5, "inference_iterations": 30,
        "train": [("bisenetv1_r18", 8, "256x320"), ("bisenetv1_x39", 8, "256x320"), ("bisenetv2", 8, "192x256")],
        "train_large": [(m, 16, "512x1024") for m in MODELS], "train_warmup": 3, "train_steps": 10}
QUICK = {"resolutions": ["64x128", "32x64"], "inference_warmup": 0, "inference_iterations": 1,
         "train": [(m, 2, "64x64") for m in MODELS], "train_large": [(m, 2, "64x96") for m in MODELS],
         "train_warmup": 0, "train_steps": 1}


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bisenet_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _release_memory() -> None:
    """Between items: drop the last item's arrays and PyTorch's cached GPU blocks (JAX keeps its pool)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def loaded_distributions() -> dict[str, str]:
    """{distribution: version} of every installed package that has a module loaded in this process:
    what the benchmark needed (the GPU image must have each, or the carried wheels)."""
    import importlib.metadata as metadata

    loaded = {os.path.realpath(m.__file__) for m in list(sys.modules.values())
              if isinstance(getattr(m, "__file__", None), str)}
    found = {}
    for dist in metadata.distributions():
        for file in dist.files or ():
            if file.suffix in (".py", ".so") and os.path.realpath(dist.locate_file(file)) in loaded:
                found[dist.metadata["Name"]] = dist.version
                break
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def inference_rows(payload: dict) -> list[dict]:
    """benchmark_speed.py's JSON -> one row per (side, model, input, precision)."""
    return [{"part": "inference", "side": r["framework"], "model": r["model"],
             "input": f"{r['batch_size']}x{r['height']}x{r['width']}", "precision": r["precision"],
             "ms": r["latency_ms_median"], "ms_p10": r["latency_ms_p10"], "ms_p90": r["latency_ms_p90"],
             "per_second": r["fps"], "compile_seconds": r["compile_seconds"] if r["framework"] == "jax" else None,
             "side_precision": r["precision"], "max_rel_diff": r["max_rel_diff"], "iterations": r["iterations"]}
            for r in payload["results"]]


def train_rows(results: list[dict], precision: str) -> list[dict]:
    """benchmark_train.py's JSON -> one row per side. ``precision`` is the one asked for (--precision),
    what the side ran in is ``side_precision`` (the same on a GPU; PyTorch stays float32 on the CPU)."""
    return [{"part": "train", "side": r["framework"], "model": r["model"],
             "input": f"{r['batch_size']}x{r['height']}x{r['width']}", "precision": precision,
             "side_precision": r["precision"],
             "ms": 1e3 * r["step_seconds_median"], "ms_min": 1e3 * r["step_seconds_min"],
             "ms_max": 1e3 * r["step_seconds_max"], "per_second": r["images_per_second"],
             "compile_seconds": r["compile_seconds"] if r["framework"] == "jax" else None, "iterations": r["steps"]}
            for r in results]


def markdown(report: dict) -> str:
    """One table per part: JAX and PyTorch side by side, JAX/PyTorch speed (> 1: JAX faster)."""
    lines = [f"GPU comparison, {report['environment'].get('device', '?')}; PyTorch on "
             f"{report['environment'].get('torch_device', 'cpu')}; "
             f"jax {report['environment'].get('jax')}, torch {report['environment'].get('torch')}"
             + (" -- QUICK MODE (tiny sizes, 1 iteration: not a measurement)" if report["quick"] else ""), ""]
    for part, unit, rate in (("inference", "latency ms (median)", "FPS"), ("train", "step ms (median)", "images/s")):
        rows = [r for r in report["rows"] if r["part"] == part]
        if not rows:
            continue
        lines += [f"**{part}** ({unit}; {rate}; JAX/PyTorch = PyTorch time / JAX time)", "",
                  f"| model | input (NxHxW) | precision | JAX ms | PyTorch ms | JAX {rate} | PyTorch {rate} | "
                  "JAX/PyTorch | JAX compile s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        keys = list(dict.fromkeys((r["model"], r["input"], r["precision"]) for r in rows))
        for key in keys:
            side = {r["side"]: r for r in rows if (r["model"], r["input"], r["precision"]) == key}
            jax_row, torch_row = side.get("jax"), side.get("torch")
            cell = lambda row, field, fmt: format(row[field], fmt) if row and row.get(field) is not None else "-"
            ratio = f"{torch_row['ms'] / jax_row['ms']:.2f}x" if jax_row and torch_row else "-"
            note = f" (PyTorch {torch_row['side_precision']})" if torch_row and torch_row["side_precision"] != key[2] else ""
            lines.append(f"| {key[0]} | {key[1]} | {key[2]}{note} | {cell(jax_row, 'ms', '.2f')} | "
                         f"{cell(torch_row, 'ms', '.2f')} | {cell(jax_row, 'per_second', '.1f')} | "
                         f"{cell(torch_row, 'per_second', '.1f')} | {ratio} | {cell(jax_row, 'compile_seconds', '.1f')} |")
        lines.append("")
    lines.append("Elapsed per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["part_seconds"].items())
                 + f"; total {report['total_seconds']:.0f} s")
    for kind, word in (("errors", "error"), ("skipped", "skipped")):
        for item in report[kind]:
            lines.append(f"- {word}: {item['item']}: {item.get('error', item.get('reason', ''))}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results_dir", nargs="?", default=os.environ.get("OUT", ""),
                        help="folder for gpu_benchmark.json and gpu_benchmark.md (default $OUT)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, no warm-up, 1 iteration: checks the whole path (on the CPU too)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--parts", nargs="+", default=["inference", "train", "train_large"],
                        choices=["inference", "train", "train_large"])
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds after which no further item starts (default 430; none with --quick)")
    parser.add_argument("--optional-until", type=float, default=None,
                        help="seconds after which the train_large items are skipped (default 300; none with --quick)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run without a GPU outside --quick (the figures are then CPU ones)")
    args = parser.parse_args(argv)
    if not args.results_dir:
        parser.error("give a results folder (or set OUT)")
    start = time.perf_counter()
    results_dir = pathlib.Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    settings = QUICK if args.quick else FULL
    no_limit = float("inf") if args.quick else None
    budget = args.budget if args.budget is not None else no_limit or 430.0
    optional_until = args.optional_until if args.optional_until is not None else no_limit or 300.0
    speed_script, train_script = _load_script("benchmark_speed"), _load_script("benchmark_train")

    import jax
    import torch

    from bisenet_jax.benchmarks import machine

    env = machine.environment()
    # float32 math settings as each framework has them by default (recorded, not changed).
    for key, read in (("torch_cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
                      ("torch_matmul_allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
                      ("jax_default_matmul_precision", lambda: str(jax.config.jax_default_matmul_precision))):
        with contextlib.suppress(Exception):
            env[key] = read()
    env["xla_python_client_mem_fraction"] = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "")
    print(f"JAX backend {jax.default_backend()} ({env['device']}); PyTorch device {machine.torch_device()} "
          f"({env.get('torch_device', 'cpu')}); quick={args.quick}; results in {results_dir}", flush=True)
    if not args.quick and not args.allow_cpu and (jax.default_backend() == "cpu" or machine.torch_device() == "cpu"):
        print("error: JAX or PyTorch has no GPU here (JAX backend "
              f"{jax.default_backend()}, torch.cuda.is_available() {torch.cuda.is_available()}); "
              "use --quick or --allow-cpu to run anyway", file=sys.stderr)
        return 2

    report = {"environment": env, "quick": args.quick, "settings": settings, "argv": list(argv or sys.argv[1:]),
              "budget_seconds": budget if math.isfinite(budget) else None,
              "optional_until_seconds": optional_until if math.isfinite(optional_until) else None,
              "rows": [], "items": [], "errors": [], "skipped": [],
              "part_seconds": {}, "total_seconds": 0.0}

    def write():
        report["total_seconds"] = time.perf_counter() - start
        (results_dir / "gpu_benchmark.json").write_text(json.dumps(report, indent=1, default=str))
        (results_dir / "gpu_benchmark.md").write_text(markdown(report))

    items = []  # (part, label, its JSON file, argv for the script's main, train precision)
    with tempfile.TemporaryDirectory() as tmp:
        if "inference" in args.parts:
            for model in args.models:
                json_path = os.path.join(tmp, f"inference_{model}.json")
                items.append(("inference", f"inference {model}", json_path, [
                    "--model", model, "--resolutions", *settings["resolutions"], "--precisions", *args.precisions,
                    "--warmup", str(settings["inference_warmup"]), "--iterations", str(settings["inference_iterations"]),
                    "--compare-torch", "--json", json_path], None))
        for part in ("train", "train_large"):
            if part not in args.parts:
                continue
            for model, batch, crop in settings[part]:
                if model not in args.models:
                    continue
                for precision in args.precisions:
                    label = f"{part} {model} batch {batch} {crop} {precision}"
                    json_path = os.path.join(tmp, f"{part}_{model}_{precision}.json")
                    # --alternate 0: one block per side, whose JSON is the list of rows train_rows reads.
                    items.append((part, label, json_path, [
                        "--model", model, "--batch-size", str(batch), "--crop", crop, "--precision", precision,
                        "--warmup", str(settings["train_warmup"]), "--steps", str(settings["train_steps"]),
                        "--compare-torch", "--alternate", "0", "--json", json_path], precision))

        for part, label, json_path, script_argv, precision in items:
            elapsed = time.perf_counter() - start
            limit = min(optional_until, budget) if part == "train_large" else budget
            if elapsed > limit:
                reason = f"started after {elapsed:.0f} s, limit {limit:.0f} s"
                print(f"== skip {label}: {reason}", flush=True)
                report["skipped"].append({"item": label, "reason": reason})
                continue
            print(f"\n== {label} (at {elapsed:.0f} s)", flush=True)
            item_start = time.perf_counter()
            try:
                script = speed_script if part == "inference" else train_script
                status = script.main(script_argv)
                if status:
                    raise RuntimeError(f"exit status {status}")
                with open(json_path) as f:
                    payload = json.load(f)
                report["rows"] += inference_rows(payload) if part == "inference" else train_rows(payload, precision)
            except (Exception, SystemExit) as error:  # argparse exits; JAX and torch raise on out-of-memory
                traceback.print_exc()
                report["errors"].append({"item": label, "error": f"{type(error).__name__}: {error}"[:2000]})
            seconds = time.perf_counter() - item_start
            report["items"].append({"item": label, "part": part, "seconds": seconds})
            report["part_seconds"][part] = report["part_seconds"].get(part, 0.0) + seconds
            print(f"-- {label}: {seconds:.1f} s (total {time.perf_counter() - start:.0f} s)", flush=True)
            with contextlib.suppress(Exception):
                _release_memory()
            write()
    report["python_packages"] = loaded_distributions()
    write()
    print()
    print(markdown(report))
    print(f"wrote {results_dir / 'gpu_benchmark.json'} and {results_dir / 'gpu_benchmark.md'}")
    bad = [r for r in report["rows"] if not (isinstance(r["ms"], float) and math.isfinite(r["ms"]) and r["ms"] > 0)]
    return 1 if report["errors"] or bad else 0


if __name__ == "__main__":
    sys.exit(main())
