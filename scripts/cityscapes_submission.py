r"""Cityscapes test-server submission: labelIds PNGs at full resolution and the zip to upload.

  python scripts/cityscapes_submission.py --checkpoint runs/cs_r18 \
      --input /data/cityscapes/leftImg8bit/test --output submission/

writes submission/<city>_<seq>_<frame>_leftImg8bit.png (labelIds, 0..33) for every test frame and
submission.zip beside the folder. The protocol is --eval.* (default ss: the whole 1024x2048 image).
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from bisenet_jax import cli
from bisenet_jax.evaluation.evaluator import default_eval_config

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Model directory or training workdir of a 19-class Cityscapes model.")
flags.DEFINE_multi_string("input", None, "A folder (e.g. leftImg8bit/test) or *_leftImg8bit.png files; repeatable.")
flags.DEFINE_string("output", None, "Output folder; the zip is written beside it as <output>.zip.")
config_flags.DEFINE_config_dict("eval", default_eval_config(), "Prediction protocol (--eval.mode=ss|ssc|msf|mscf ...).")
flags.mark_flags_as_required(["checkpoint", "input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from bisenet_jax import checkpoints, data
    from bisenet_jax.evaluation.predict import Predictor
    from bisenet_jax.evaluation.submission import write_submission
    from bisenet_jax.models import create_model

    variables, info = checkpoints.load_model(FLAGS.checkpoint)
    model = create_model(info["model_name"], int(info["num_classes"]), aux_heads=False)
    predictor = Predictor(model, variables, data.get_dataset_info("cityscapes"), FLAGS.eval)
    archive = write_submission(predictor, FLAGS.input, FLAGS.output)
    print(f"submission: {archive} (labelIds PNGs in {FLAGS.output})")


if __name__ == "__main__":
    cli.run(main)
