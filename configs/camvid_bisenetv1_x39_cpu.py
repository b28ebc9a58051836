r"""BiSeNetV1-Xception39 on CamVid from scratch in 30 minutes of a 2-core CPU (the benchmark's recipe).

    python -m bisenet_jax.main --config configs/camvid_bisenetv1_x39_cpu.py \
        --config.data.root=/data/camvid --workdir runs/camvid_v1_x39_cpu
    python scripts/benchmark_camvid.py --model v1_x39 --root /data/camvid --compare-torch  # against PyTorch

Measured (README, Results): 55.6% val mIoU (ss, 480x360) in the latest race, PyTorch's reference 53.5% (one seed
each, on an Intel Xeon VM; the best JAX run is 57.1%, session 35; the schedule's 1320 steps are refitted to the
machine by the benchmark).
"""
from bisenet_jax.benchmarks.recipes import camvid_cpu_recipe


def get_config():
    return camvid_cpu_recipe("v1_x39")
