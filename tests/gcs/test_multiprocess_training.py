"""Two processes x 2 CPU devices (gloo collectives, jax.distributed on 127.0.0.1) train what one
process x 4 devices trains from the same global batches and seed: the same losses and parameters,
both processes writing one gs:// workdir, then both resuming from it.

Computed in float64 (JAX_ENABLE_X64, config.model.dtype) so that the two layouts' different
summation orders cost float64 rounding only. The comparison still ends at float32 resolution: the
parameters stay float32 in every dtype (the models keep param_dtype=float32) and the loss is reduced
in float32, so the two runs may differ by float32 rounding (measured with V1-R18 at 64x64: the losses by
7e-10 relative, the parameter vectors by 3e-12 after 3 steps and 2e-8 after the resumed steps 4-5; at
the 32x32 crops used until session 44: the losses by 2e-15, the float32 parameters identical), far below
what a per-process BatchNorm, a per-process loss mean or another batch order would change (1e-3 and more).
Since the train step's CPU option left XLA its own elementwise fusions (session 44, xla_flags.py; with
the option as before the two runs read 0 and 3e-10, whether or not 1x1 kernel gradients are matmuls),
the two layouts' float64 results round a few float32 parameters apart by step 3 (6e-12 of the vector,
9e-10 at most), and the next two steps grow that to 1.1e-7 of the vector (3e-7 at most; the losses
2.4e-8): one rounding step in a few values moves the early steps' outcome, as in the CamVid races'
trajectories (docs/benchmarks.md). Hence, relative to the whole vector, 1e-7 after 3 steps and 1e-6
after 5, and for the largest entry 1e-6 and 1e-5.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

from bisenet_jax import checkpoints, paths

HERE = pathlib.Path(__file__).parent
# V1-R18 rather than the tiny config's BiSeNetV2: the test is about the processes (global batches, synchronised
# BatchNorm, one loss mean, one workdir, a preemption seen by all), which R18 exercises with BatchNorm, the
# OHEM loss on three heads and a max pool, and its float64 step compiles in a fraction of V2's time (this
# test took 517 s of the suite with V2). Dropout under sharding stays covered by tests/train/test_sharding.py.
# Crops of 32x32 rather than the tiny config's 64x64: float64 convolutions are slow in XLA:CPU (a single
# process's run took 62 s at 64x64, 43 s at 32x32, with every program in the compilation cache).
FLAGS = ["--config", str(HERE.parents[1] / "configs" / "tiny.py"), "--config.model.name=bisenetv1_r18",
         "--config.model.dtype=float64", "--config.data.crop_size=(32,32)",
         "--config.train.eval_every=-1", "--config.train.num_prediction_images=0", "--config.train.num_steps=5",
         "--config.train.checkpoint_every=3", "--config.train.log_every=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cache(name: str) -> pathlib.Path:
    """A compilation cache of the runs named ``name``, beside the tests' own (tests/conftest.py) so that
    later test sessions reuse it. The processes of a run must find (or miss) a program in it together:
    one compiling while the other already runs the program's first collective would make gloo give up
    after 30 s. An interrupted run can leave a cache that holds one process's programs only, so a folder
    counts only with the marker that a finished run leaves; without it the folder is emptied first."""
    return pathlib.Path(f"{os.environ['JAX_COMPILATION_CACHE_DIR']}_two_processes") / name


class Run:
    """``processes`` processes with 4 // processes CPU devices each, started; :meth:`logs` waits for them.
    Process 0 may get a SIGTERM after a step, process 1 a clock that jumps ahead. ``cache``: the name of a
    :func:`run_cache` for the run (a single process uses the tests' own). ``step_sleep``: seconds every
    process sleeps before each step (gcs_run.py), for runs whose length is a wall-clock budget: they then
    leave most of the CPU to the tests running beside them."""

    def __init__(self, emulator, workdir: str, processes: int, sigterm_at_step: int = 0, cache: str = "",
                 flags: tuple[str, ...] = (), clock_ahead_in_process_1: int = 0, step_sleep: float = 0.0):
        env = dict(emulator.env(), JAX_ENABLE_X64="1", BISENET_TEST_STEP_SLEEP=str(step_sleep),
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={4 // processes}")
        self.complete = None
        if cache:
            folder = run_cache(cache)
            self.complete = folder / "complete"
            if self.complete.exists():
                self.complete.unlink()  # back once this run has finished too
            else:
                shutil.rmtree(folder, ignore_errors=True)
            env["JAX_COMPILATION_CACHE_DIR"] = str(folder)
        cluster = [f"--coordinator_address=127.0.0.1:{free_port()}", f"--num_processes={processes}",
                   "--cpu_collectives=gloo"] if processes > 1 else []

        def fault(i):
            if sigterm_at_step and i == 0:
                return ["sigterm_after_step", str(sigterm_at_step)]
            if clock_ahead_in_process_1 and i == 1:
                return ["clock_ahead", str(clock_ahead_in_process_1)]
            return ["none", "0"]

        commands = [[sys.executable, str(HERE / "gcs_run.py"), *fault(i), *FLAGS, *flags, f"--workdir={workdir}",
                     *cluster, *([f"--process_id={i}"] if processes > 1 else [])] for i in range(processes)]
        # Logs to files, not pipes: a process whose pipe filled up while the test waited on the other would
        # stop in its next write, and the other in its next collective.
        self.files = [tempfile.TemporaryFile("w+") for _ in range(processes)]
        self.procs = [subprocess.Popen(c, cwd=HERE.parents[1], env=env, stdout=f, stderr=subprocess.STDOUT,
                                       text=True) for c, f in zip(commands, self.files)]

    def logs(self) -> list[str]:
        """Waits for every process; each one's output once all exited with 0 (else the assertion names them)."""
        try:
            for p in self.procs:
                p.wait(timeout=600)
            logs = [(f.seek(0), f.read())[1] for f in self.files]
        finally:
            for p, f in zip(self.procs, self.files):
                p.kill()
                f.close()
        assert all(p.returncode == 0 for p in self.procs), "\n----\n".join(log[-3000:] for log in logs)
        if self.complete is not None:
            self.complete.touch()
        return logs


def train(emulator, workdir: str, processes: int, **options) -> list[str]:
    """A :class:`Run`, waited for: its processes' logs."""
    return Run(emulator, workdir, processes, **options).logs()


def losses(workdir: str) -> dict[int, float]:
    lines = paths.path(f"{workdir}/metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}


def parameters(workdir: str, step: int) -> list[np.ndarray]:
    variables, info = checkpoints.load_model(workdir, step=step)
    assert info["step"] == step
    return jax.tree_util.tree_leaves(variables)


def relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    diff = np.sqrt(sum(float(np.sum((x.astype(np.float64) - y) ** 2)) for x, y in zip(a, b, strict=True)))
    return diff / np.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in a))


@pytest.mark.slow  # three runs of float64 compiles and steps
def test_two_processes_train_what_one_process_trains_and_resume_together_from_one_gs_workdir(
        gcs, record_property):
    # One test, not several sharing a module fixture: under pytest-xdist each worker would start its
    # own copy of these runs.
    bucket = gcs.create_bucket("bisenet-multi")
    single, multi = f"{bucket}/one_process", f"{bucket}/two_processes"
    train(gcs, single, processes=1)  # steps 1..5, checkpoints 3 and 5
    first = train(gcs, multi, processes=2, sigterm_at_step=3, cache="resume")
    second = train(gcs, multi, processes=2, cache="resume")

    # A preemption notice to one process stops both at the same step; both resume from the workdir.
    assert "2 process(es)" in first[0] and "stopped at step 3: preempted" in first[0]
    assert f"resumed from {multi}/checkpoints/3 (step 3)" in second[0]
    with checkpoints.create_manager(f"{multi}/checkpoints", read_only=True) as manager:
        assert sorted(manager.all_steps()) == [3, 5]

    # The same losses, step by step (the loss is reduced in float32: float32 rounding apart).
    one, two = losses(single), losses(multi)
    assert sorted(one) == sorted(two) == [1, 2, 3, 4, 5]
    worst = max(abs(one[step] - two[step]) / abs(one[step]) for step in one)
    record_property("max_relative_loss_difference", float(worst))  # plain floats: xdist serialises them
    assert worst <= 1e-6, (one, two)
    assert one[5] != one[1]  # the parameters did change

    # The same parameters after 3 steps and after the resumed steps 4 and 5.
    for step in (3, 5):
        a, b = parameters(single, step), parameters(multi, step)
        whole = relative_difference(a, b)
        largest = max(float(np.max(np.abs(y - x))) for x, y in zip(a, b, strict=True))
        record_property(f"relative_parameter_difference_step_{step}", float(whole))
        record_property(f"max_absolute_parameter_difference_step_{step}", float(largest))
        assert whole < (1e-7 if step == 3 else 1e-6) and largest < (1e-6 if step == 3 else 1e-5), (step, whole, largest)


def stopped_step(log: str) -> int:
    """The step at which the run's one "stopped at step N: time budget ..." line says it stopped."""
    stopped = [line for line in log.splitlines() if line.startswith("stopped at step ")]
    assert len(stopped) == 1 and "time budget of 1.5 min reached" in stopped[0], log[-3000:]
    return int(stopped[0].split()[3].rstrip(":"))


@pytest.mark.slow  # two runs of two processes, side by side, for a 90-second budget
def test_two_processes_read_the_time_budget_and_the_time_schedule_on_process_0s_clock(gcs, record_property):
    """On either clock the budget's end, and on the time clock the schedule's position, come from process 0's
    clock. Process 1's clock jumps ahead after the start (15 s in the time-clock run, 10 s in the step-clock
    run): were it read, process 1 would stop (and save) while process 0 trains on, and the run would fail in
    its next collective.

    The two runs are independent (each its own coordinator, workdir and cache) and run at the same time, each
    process sleeping 2 s before every step: a budget is wall-clock time, which the test would otherwise spend
    training (two tests of 135 s each under pytest -n 2 on the 2-core AMD EPYC of session 26; this one took
    160 s alone there, 264 CPU-seconds, most of them the four processes' start-ups and final saves)."""
    bucket = gcs.create_bucket("bisenet-budget")
    budget = ("--config.model.dtype=float32", "--config.train.time_budget_minutes=1.5",
              "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000",
              "--config.train.log_every=2")
    time_clock = Run(gcs, f"{bucket}/time_clock", processes=2, cache="time_clock", clock_ahead_in_process_1=15,
                     step_sleep=2.0, flags=(*budget, "--config.optimizer.schedule_clock=time",
                                            "--config.optimizer.total_steps=1000"))
    step_clock = Run(gcs, f"{bucket}/step_clock", processes=2, cache="step_clock", clock_ahead_in_process_1=10,
                     step_sleep=2.0, flags=budget)
    time_logs, step_logs = time_clock.logs(), step_clock.logs()

    # The time clock: it trained after compiling (the budget was 60 s until session 25, when the start-ups of
    # four processes took all of it on the 2-core AMD EPYC), it saved once, at the step where it stopped ...
    assert "learning-rate schedule on the time clock" in time_logs[0]
    step = stopped_step(time_logs[0])
    record_property("time_clock_steps", step)
    assert step >= 2, time_logs[0][-3000:]
    with checkpoints.create_manager(f"{bucket}/time_clock/checkpoints", read_only=True) as manager:
        assert list(manager.all_steps()) == [step]
        assert checkpoints.read_meta(manager, step)["schedule_seconds"] > 90.0
    # ... and the schedule decayed with the budget (1000 virtual steps), not over the 100000-step cap: on
    # the step clock the rate would still be ~1e-2 (the peak); near the budget's end it is below 1e-3.
    lines = paths.path(f"{bucket}/time_clock/metrics.jsonl").read_text().splitlines()
    lrs = {r["step"]: r["train/lr"] for r in map(json.loads, lines) if "train/lr" in r}
    assert lrs[step] < 1e-3 and lrs[step] < 0.25 * max(lrs.values()), lrs

    # The step clock: its budget, too, ends on process 0's clock; both processes save the same step, once.
    assert "learning-rate schedule on the time clock" not in step_logs[0]
    step = stopped_step(step_logs[0])
    record_property("step_clock_steps", step)
    assert step >= 2, step_logs[0][-3000:]
    with checkpoints.create_manager(f"{bucket}/step_clock/checkpoints", read_only=True) as manager:
        assert list(manager.all_steps()) == [step]
