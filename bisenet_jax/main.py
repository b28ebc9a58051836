"""Train (and evaluate) BiSeNet: ``python -m bisenet_jax.main --config configs/demo.py --workdir runs/demo``.

Deliberately short, as in flax's examples: flags and config in, one call out. Any config field can
be overridden, e.g. ``--config.optimizer.lr=0.02 --config.train.batch_size=8``; the config is
locked, so a misspelt field fails loudly. Running the same command on an existing workdir resumes.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from bisenet_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder or gs://bucket/path for checkpoints, TensorBoard logs, metrics and "
                    "predictions (every process of a multi-host run passes the same one).")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for multi-process runs without auto-detection.")
flags.DEFINE_integer("num_processes", 0, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", -1, "This process's index (with --coordinator_address).")
flags.DEFINE_string("cpu_collectives", "", "'gloo' for multi-process runs on CPUs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax/grain info logs would drown the progress bar
    from bisenet_jax.train import distributed
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.cpu_collectives)
    from bisenet_jax.train.loop import train_and_evaluate
    train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
