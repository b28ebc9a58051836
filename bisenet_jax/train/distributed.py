"""Joining a multi-process run (TPU pod slices, multi-node GPU) before any other JAX call."""
from __future__ import annotations

import os

import jax

# CPU collectives (gloo) wait 30 s by default for a peer to join a collective, but processes reach a
# program's first collective minutes apart when their compile times differ (one finds the program in
# its compilation cache, the other compiles it): the first one would give up.
CPU_COLLECTIVE_TIMEOUT_S = 900


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
        _add_xla_flag("xla_cpu_collective_timeout_seconds", CPU_COLLECTIVE_TIMEOUT_S)
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif _in_cluster():
        jax.distributed.initialize()


def _add_xla_flag(name: str, value) -> None:
    """Append ``--name=value`` to XLA_FLAGS unless the user set it; read when the backend starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if f"--{name}=" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --{name}={value}".strip()


def _in_cluster() -> bool:
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ
    tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or tpu_pod
