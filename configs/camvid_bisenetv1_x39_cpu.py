r"""BiSeNetV1-Xception39 on CamVid from scratch in 30 minutes of a 2-core CPU (the benchmark's recipe).

    python -m bisenet_jax.main --config configs/camvid_bisenetv1_x39_cpu.py \
        --config.data.root=/data/camvid --workdir runs/camvid_v1_x39_cpu
    python scripts/benchmark_camvid.py --model v1_x39 --root /data/camvid --compare-torch  # against PyTorch

Measured: README, Results (the latest race against PyTorch's reference, with the tally over seeds); the
schedule's 1320 steps are refitted to the machine by the benchmark.
"""
from bisenet_jax.benchmarks.recipes import camvid_cpu_recipe


def get_config():
    return camvid_cpu_recipe("v1_x39")
