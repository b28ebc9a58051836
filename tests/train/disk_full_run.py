"""Run by test_faults.py in a subprocess: the demo training CLI whose second checkpoint save hits a
file-size limit (RLIMIT_FSIZE, how a full disk or a quota looks to the writer: EFBIG instead of ENOSPC)."""
import resource
import signal
import sys

from bisenet_jax import checkpoints, cli, main

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails with EFBIG instead of killing us
real_save = checkpoints.save
calls = {"n": 0}


def save_with_a_full_disk_from_the_second_save(manager, step, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:
        manager.wait_until_finished()
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
    return real_save(manager, step, *args, **kwargs)


checkpoints.save = save_with_a_full_disk_from_the_second_save
config, workdir = sys.argv[1:3]
sys.argv = ["main", "--config", config, "--workdir", workdir, "--config.train.eval_every=-1",
            "--config.train.num_prediction_images=0", "--config.train.num_steps=4",
            "--config.train.checkpoint_every=2"]
cli.run(main.main)
