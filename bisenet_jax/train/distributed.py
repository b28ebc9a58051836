"""Joining a multi-process run (TPU pod slices, multi-node GPU) before any other JAX call."""
from __future__ import annotations

import os

import jax


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               cpu_collectives: str = "") -> None:
    """Call ``jax.distributed.initialize`` when the run spans processes.

    - explicit flags (``--coordinator_address host:port --num_processes N --process_id i``) win;
    - on Cloud TPU VMs and under SLURM, JAX detects the cluster itself (``initialize()`` with no
      arguments), so the same command runs on every host;
    - otherwise (one process) nothing happens.
    ``cpu_collectives="gloo"`` enables cross-process collectives for CPU-only runs (tests, laptops).
    """
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif _in_cluster():
        jax.distributed.initialize()


def _in_cluster() -> bool:
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ
    tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or tpu_pod
