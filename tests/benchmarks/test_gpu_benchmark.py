"""The GPU comparison (scripts/gpu_benchmark.py, .sh) and the GPU paths of the two benchmarks, checked on
the CPU: no GPU is needed (the CUDA checks monkeypatch what torch and JAX report)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import types

import jax
import pytest

from bisenet_jax.benchmarks import inference_speed, machine, train_speed

torch = pytest.importorskip("torch")

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = ("bisenetv1_r18", "bisenetv1_x39", "bisenetv2")
PRECISIONS = ("float32", "bfloat16")
# The Python packages of the nvidia-h200 machine's image ('cuda'), as the device notes list them
# (read there on 2026-11-17): what the benchmarks may import besides the wheels of fetch_gpu_wheels.sh.
GPU_IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split()


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _fake_gpu(monkeypatch):
    """JAX and torch report a GPU (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H200")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda *args: [types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H200")])


# --------------------------------------------------------------------------------------------
# The device and precision rules


@pytest.mark.parametrize("cuda, backend, expected", [(True, "gpu", "cuda"), (True, "cpu", "cpu"),
                                                     (False, "gpu", "cpu"), (False, "cpu", "cpu")])
def test_torch_runs_on_cuda_when_it_has_cuda_and_jax_is_on_a_gpu(monkeypatch, cuda, backend, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert machine.torch_device() == expected


def test_this_machine_runs_torch_on_the_cpu_with_the_cpu_protocol_unchanged():
    assert machine.torch_device() == "cpu"
    assert train_speed.device_protocol(True) == train_speed.device_protocol(False) == ""
    env = machine.environment()
    assert "torch_device" not in env
    assert "on a GPU" not in inference_speed.format_protocol(env, 3, 20)
    # On the CPU PyTorch's train step stays float32, as in every CPU figure recorded so far.
    assert train_speed.torch_precision("bfloat16", "cpu") == "float32"
    assert train_speed.torch_precision("bfloat16", "cuda") == "bfloat16"


def test_synchronize_only_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: calls.append(args))
    machine.torch_synchronize("cpu")
    assert calls == []
    machine.torch_synchronize("cuda")
    assert len(calls) == 1
    # The inference runner waits for the GPU after every forward and brings the output to the host.
    run = inference_speed._TorchRun(torch.nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 4, 5), device="cuda")
    run()
    run()
    assert len(calls) == 3 and run.output().shape == (1, 4, 5, 2)


def test_protocols_name_the_gpu_and_how_pytorch_is_timed_there(monkeypatch):
    _fake_gpu(monkeypatch)
    assert machine.torch_device() == "cuda"
    text = train_speed.device_protocol(True)
    assert "JAX on gpu (NVIDIA H200)" in text and "PyTorch on cuda (NVIDIA H200)" in text
    assert "torch.cuda.synchronize()" in text and "autocast" in text
    assert train_speed.device_protocol(False) == "; JAX on gpu (NVIDIA H200)"
    env = {"device": "gpu: NVIDIA H200", "torch_device": "cuda: NVIDIA H200", "cpus": 16, "jax": "0", "torch": "0",
           "python": "3.12", "xla_flags": ""}
    protocol = inference_speed.format_protocol(env, 5, 30)
    assert "on a GPU: JAX on gpu: NVIDIA H200; PyTorch on cuda: NVIDIA H200" in protocol


def test_torch_train_step_in_bfloat16_runs_forward_under_autocast(monkeypatch):
    from bisenet_jax.benchmarks import torch_reference

    dtypes, synced = [], []
    loss = torch_reference.segmentation_loss

    def recording_loss(logits, aux_logits, *args):
        dtypes.append(logits.dtype)
        return loss(logits, aux_logits, *args)

    monkeypatch.setattr(torch_reference, "segmentation_loss", recording_loss)
    monkeypatch.setattr(machine, "torch_synchronize", synced.append)
    result = train_speed.torch_train_speed("bisenetv1_x39", 2, 64, 64, num_classes=3, warmup=1, steps=1,
                                           precision="bfloat16", device="cpu")
    assert result["precision"] == "bfloat16" and result["step_seconds_median"] > 0
    assert dtypes == [torch.bfloat16] * 2 and synced == ["cpu"] * 2
    # Parameters stay float32 (mixed precision, like JAX's bfloat16 compute dtype).
    net = torch_reference.reference_model(train_speed.benchmark_config("bisenetv1_x39", 3, "float32", 2, 64, 64))
    assert {p.dtype for p in net.parameters()} == {torch.float32}


# --------------------------------------------------------------------------------------------
# The driver


def _fake_scripts(fail: str = ""):
    """Stand-ins for benchmark_speed.py and benchmark_train.py: they write their scripts' JSON (built
    with the real result types) and record their arguments; ``fail`` in the arguments raises."""
    calls = []

    def speed_main(argv):
        calls.append(argv)
        args = _args(argv, ["--model", "--resolutions", "--precisions", "--json"])
        results = []
        for precision in args["--precisions"]:
            for resolution in args["--resolutions"]:
                height, width = (int(v) for v in resolution.split("x"))
                for framework, ms in (("jax", 2.0), ("torch", 3.0)):
                    results.append(dataclasses.asdict(inference_speed.SpeedResult(
                        framework, args["--model"][0], 1, height, width, precision, ms, ms, ms, ms, 1e3 / ms,
                        30, 5, 1.0, 16, 1000, 1.0)))
        pathlib.Path(args["--json"][0]).write_text(json.dumps({"results": results}))
        return 0

    def train_main(argv):
        calls.append(argv)
        if fail and fail in " ".join(argv):
            raise RuntimeError("out of memory (fake)")
        args = _args(argv, ["--model", "--batch-size", "--crop", "--precision", "--json"])
        height, width = (int(v) for v in args["--crop"][0].split("x"))
        batch = int(args["--batch-size"][0])
        results = [train_speed._result(framework, args["--model"][0], batch, height, width, args["--precision"][0],
                                       [seconds] * 3, 10.0 if framework == "jax" else 0.0)
                   for framework, seconds in (("jax", 0.02), ("torch", 0.03))]
        pathlib.Path(args["--json"][0]).write_text(json.dumps(results))
        return 0

    return {"benchmark_speed": types.SimpleNamespace(main=speed_main),
            "benchmark_train": types.SimpleNamespace(main=train_main)}, calls


def _args(argv, names):
    out, current = {}, None
    for token in argv:
        if token.startswith("--"):
            current = token if token in names else None
            if current:
                out[current] = []
        elif current:
            out[current].append(token)
    return out


def test_driver_writes_every_model_precision_side_row_and_the_table(tmp_path, monkeypatch, load_script):
    driver = load_script("gpu_benchmark")
    scripts, calls = _fake_scripts()
    monkeypatch.setattr(driver, "_load_script", scripts.__getitem__)
    monkeypatch.setattr(driver, "loaded_distributions", lambda: {"jax": jax.__version__})  # tested below
    assert driver.main([str(tmp_path), "--allow-cpu"]) == 0
    report = json.loads((tmp_path / "gpu_benchmark.json").read_text())
    assert not report["errors"] and not report["skipped"]
    keys = {(r["part"], r["model"], r["input"], r["precision"], r["side"]) for r in report["rows"]}
    expected = {("inference", m, f"1x{res}", p, s) for m in MODELS for res in ("1024x2048", "512x1024")
                for p in PRECISIONS for s in ("jax", "torch")}
    expected |= {("train", m, inp, p, s) for m, inp in (("bisenetv1_r18", "8x256x320"), ("bisenetv1_x39", "8x256x320"),
                                                       ("bisenetv2", "8x192x256"), *((m, "16x512x1024") for m in MODELS))
                 for p in PRECISIONS for s in ("jax", "torch")}
    assert keys == expected
    assert all(math.isfinite(r["ms"]) and r["ms"] > 0 and r["per_second"] > 0 for r in report["rows"])
    assert set(report["part_seconds"]) == {"inference", "train", "train_large"}
    # Every train call compares with PyTorch at the precision it names.
    train_calls = [c for c in calls if "--batch-size" in c]
    assert len(train_calls) == 12 and all("--compare-torch" in c for c in train_calls)
    # One block per side (the rows' JSON list this driver reads), not benchmark_train.py's default rounds.
    assert all(c[c.index("--alternate") + 1] == "0" for c in train_calls)
    assert sorted(c[c.index("--precision") + 1] for c in train_calls) == ["bfloat16"] * 6 + ["float32"] * 6
    table = (tmp_path / "gpu_benchmark.md").read_text()
    assert "| bisenetv2 | 16x512x1024 | bfloat16 | 20.00 | 30.00 | 800.0 | 533.3 | 1.50x | 10.0 |" in table
    assert "| bisenetv1_x39 | 1x512x1024 | float32 | 2.00 | 3.00 | 500.0 | 333.3 | 1.50x | 1.0 |" in table
    assert "python_packages" in report and "jax" in report["python_packages"]


def test_driver_records_an_error_skips_late_optional_items_and_goes_on(tmp_path, monkeypatch, load_script):
    driver = load_script("gpu_benchmark")
    scripts, calls = _fake_scripts(fail="bisenetv1_r18 --batch-size 8")
    monkeypatch.setattr(driver, "_load_script", scripts.__getitem__)
    monkeypatch.setattr(driver, "loaded_distributions", lambda: {"jax": jax.__version__})  # tested below
    assert driver.main([str(tmp_path), "--allow-cpu", "--optional-until", "0", "--precisions", "float32"]) == 1
    report = json.loads((tmp_path / "gpu_benchmark.json").read_text())
    assert [e["item"] for e in report["errors"]] == ["train bisenetv1_r18 batch 8 256x320 float32"]
    assert len(report["skipped"]) == 3 and all(s["item"].startswith("train_large") for s in report["skipped"])
    assert {(r["part"], r["model"]) for r in report["rows"]} == {
        *(("inference", m) for m in MODELS), ("train", "bisenetv1_x39"), ("train", "bisenetv2")}
    assert "error: train bisenetv1_r18" in (tmp_path / "gpu_benchmark.md").read_text()


def test_driver_refuses_to_run_the_gpu_comparison_without_a_gpu(tmp_path, load_script):
    assert load_script("gpu_benchmark").main([str(tmp_path)]) == 2


def test_quick_mode_runs_the_real_inference_script_end_to_end(tmp_path, monkeypatch, load_script):
    driver = load_script("gpu_benchmark")
    monkeypatch.setitem(driver.QUICK, "resolutions", ["32x64"])
    assert driver.main(["--quick", str(tmp_path), "--parts", "inference", "--models", "bisenetv1_x39",
                        "--precisions", "float32"]) == 0
    report = json.loads((tmp_path / "gpu_benchmark.json").read_text())
    rows = report["rows"]
    assert [(r["side"], r["input"], r["precision"]) for r in rows] == [("jax", "1x32x64", "float32"),
                                                                      ("torch", "1x32x64", "float32")]
    assert all(math.isfinite(r["ms"]) and r["ms"] > 0 for r in rows)
    assert rows[1]["max_rel_diff"] < 1e-3  # both frameworks ran the same network on the same input


# --------------------------------------------------------------------------------------------
# What the GPU machine must have


def test_the_benchmarks_import_only_the_gpu_image_and_the_carried_wheels():
    """Imports the benchmark modules in a fresh process and lists the installed packages they loaded:
    each must be in the GPU image or among the wheels scripts/fetch_gpu_wheels.sh downloads."""
    wheels = re.findall(r"^\s+([A-Za-z0-9_.-]+)==", (REPO / "scripts" / "fetch_gpu_wheels.sh").read_text(), re.M)
    assert {_normalise(w) for w in wheels} >= {"grain", "ml-collections", "tensorboardx", "array-record"}
    code = ("import importlib.util, json, sys\n"
            "import bisenet_jax.benchmarks.train_speed, bisenet_jax.benchmarks.inference_speed\n"
            "import bisenet_jax.benchmarks.torch_reference, bisenet_jax.benchmarks.machine\n"
            f"spec = importlib.util.spec_from_file_location('g', {str(REPO / 'scripts' / 'gpu_benchmark.py')!r})\n"
            "g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)\n"
            "print(json.dumps(g.loaded_distributions()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    loaded = {_normalise(name) for name in json.loads(out.stdout.strip().splitlines()[-1])}
    assert {"jax", "flax", "torch", "grain"} <= loaded
    # cmeel: a dependency of cmeel-mimalloc (bisenet_jax/allocator.py) whose .pth file imports it at every
    # interpreter start where it is installed; the benchmarks do not need it (without the wheel the
    # allocator is left alone), so the GPU machine need not have it.
    allowed = {_normalise(n) for n in GPU_IMAGE} | {_normalise(w) for w in wheels} | {"bisenet-jax", "cmeel"}
    assert sorted(loaded - allowed) == [], "neither in the GPU image nor carried (scripts/fetch_gpu_wheels.sh)"
