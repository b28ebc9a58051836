"""Run by the GCS tests in a subprocess: the training CLI with one fault at an exact moment.

  python tests/gcs/gcs_run.py FAULT STEP [main.py flags...]

FAULT is one of (STEP counts the steps of this start, so on a fresh workdir it is the step number)
  none               no fault;
  kill_before_step   SIGKILL just before training step STEP (the saves before it have finished:
                     the test runs it with synchronous checkpointing);
  kill_during_save   SIGKILL inside the asynchronous save of step STEP, once every item of the step is
                     written but before orbax commits the step (on GCS: its commit_success.txt);
  sigterm_after_step SIGTERM (a preemption notice) during step STEP, to this process only: every
                     process of the run saves step STEP and stops;
  clock_ahead        this process's wall clock, as the loop reads it for the time budget and the time-driven
                     schedule, jumps STEP seconds ahead after its first reading.

BISENET_TEST_STEP_SLEEP (seconds, default 0) makes the process sleep before every step: runs whose length
is a time budget then leave the CPU to whatever runs beside them.
"""
from __future__ import annotations

import os
import signal
import sys

from bisenet_jax import cli, main
from bisenet_jax.train import loop

fault, fault_step = sys.argv[1], int(sys.argv[2])
sys.argv = ["main", *sys.argv[3:]]
calls = {"n": 0}
real_make_global_batch = loop.data_lib.make_global_batch


def make_global_batch(batch, sharding):
    calls["n"] += 1  # one call per step, from the first step of this start
    if fault == "kill_before_step" and calls["n"] == fault_step:
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "sigterm_after_step" and calls["n"] == fault_step:
        os.kill(os.getpid(), signal.SIGTERM)  # the loop checks it once this step is done
    return real_make_global_batch(batch, sharding)


if fault in ("kill_before_step", "sigterm_after_step"):
    loop.data_lib.make_global_batch = make_global_batch
elif fault == "kill_during_save":
    # The step-level commit of orbax's GCS layout (a private class: a fault at this exact point has no
    # public hook). Item folders are committed first, the step folder last.
    from orbax.checkpoint._src.path import atomicity

    real_finalize = atomicity.CommitFileTemporaryPath.finalize

    async def finalize(self):
        if self.get_final().name == str(fault_step):
            os.kill(os.getpid(), signal.SIGKILL)
        return await real_finalize(self)

    atomicity.CommitFileTemporaryPath.finalize = finalize
elif fault == "clock_ahead":
    import time
    import types

    from bisenet_jax.train import optim

    def jumping_clock():
        """The wall clock, STEP seconds ahead from its second reading on: a constant offset would cancel
        in every elapsed time, a jump after the start (an NTP correction, say) does not."""
        readings = {"n": 0}

        def now():
            readings["n"] += 1
            return time.time() + (fault_step if readings["n"] > 1 else 0)
        return now

    # The time clock's budget and schedule (BudgetClock), and the step clock's budget (the loop's time.time()).
    loop.BudgetClock = lambda *args, **kwargs: optim.BudgetClock(*args, **kwargs, now=jumping_clock())
    loop.time = types.SimpleNamespace(time=jumping_clock(), time_ns=time.time_ns, strftime=time.strftime)
elif fault != "none":
    raise SystemExit(f"unknown fault {fault!r}")

step_sleep = float(os.environ.get("BISENET_TEST_STEP_SLEEP", "0"))
if step_sleep:
    import time as time_module

    def sleeping(batch, sharding, make=loop.data_lib.make_global_batch):
        time_module.sleep(step_sleep)
        return make(batch, sharding)

    loop.data_lib.make_global_batch = sleeping

cli.run(main.main)
