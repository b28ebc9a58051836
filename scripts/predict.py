r"""Predict images, folders and videos with a checkpoint: label PNGs, coloured PNGs, overlays, videos.

  python scripts/predict.py --checkpoint runs/cs_r18 --input street.png --input frames/ --output out/
  python scripts/predict.py --checkpoint runs/cs_r18 --input drive.mp4 --output out/ --video_render=color
  python scripts/predict.py --checkpoint runs/cs_r18 --input frames/ --output out/ --batch_size=4 \
      --eval.mode=msf --eval.scales="(0.75,1.0,1.25)" --eval.flip=True
  python scripts/predict.py --model r18.onnx --input street.png --output out/   # or .tflite / .stablehlo

The dataset (class colours, mean/std for normalisation) comes from --config (its data section, e.g.
a custom dataset), else --dataset, else the dataset recorded in the checkpoint, or for --model (a
file written by scripts/export.py) the file's own metadata. Outputs under
--output: labels/ (class ids, palette PNG), colors/, overlays/ mirroring the input folders, and
videos/<name>_<overlay|color>.mp4 for every video. The protocol is --eval.* (default ss: whole image).
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from bisenet_jax import allocator
from bisenet_jax.evaluation.evaluator import default_eval_config
from bisenet_jax.evaluation.predict import OUTPUTS, VIDEO_CODECS

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.")
flags.DEFINE_string("model", None, "Instead of --checkpoint: an exported .onnx, .tflite or .stablehlo file.")
flags.DEFINE_multi_string("input", None, "An image, a folder (searched recursively) or a video; repeatable.")
flags.DEFINE_string("output", None, "Output folder.")
config_flags.DEFINE_config_file("config", None, "Optional experiment config: its data section names the dataset.")
flags.DEFINE_string("dataset", "", "Dataset name for colours and normalisation (cityscapes, camvid, ...).")
config_flags.DEFINE_config_dict("eval", default_eval_config(), "Prediction protocol (--eval.mode=ss|ssc|msf|mscf ...).")
flags.DEFINE_integer("batch_size", 1, "Images (of one size) per forward pass.")
flags.DEFINE_list("outputs", list(OUTPUTS), "Which image outputs to write: labels, colors, overlays.")
flags.DEFINE_float("alpha", 0.5, "Weight of the class colours in overlays.")
flags.DEFINE_enum("video_render", "overlay", ["overlay", "color"], "What output videos show.")
flags.DEFINE_list("video_frames", [], "Also write these per-frame PNGs for videos (labels, colors, overlays).")
flags.DEFINE_enum("video_codec", "libx264", list(VIDEO_CODECS), "libx264 (.mp4) or ffv1 (lossless .mkv).")
flags.mark_flags_as_required(["input", "output"])
flags.mark_flags_as_mutual_exclusive(["checkpoint", "model"], required=True)


def dataset_info(checkpoint_info: dict):
    """The DatasetInfo from --config, --dataset or the checkpoint, in that order."""
    from bisenet_jax import data

    if FLAGS.config is not None:
        return data.get_dataset_info(FLAGS.config.data)
    name = FLAGS.dataset or checkpoint_info.get("dataset")
    if not name:
        raise app.UsageError(f"checkpoint {FLAGS.checkpoint} does not record its dataset: pass --dataset NAME "
                             "or --config with the training config (for custom datasets)")
    try:
        return data.get_dataset_info(name)
    except KeyError as error:
        raise app.UsageError(f"{error}; for custom datasets pass --config with the training config") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # orbax logs every restore step at INFO
        logging.set_verbosity(logging.WARNING)
    from bisenet_jax import checkpoints
    from bisenet_jax.evaluation import predict
    from bisenet_jax.evaluation.evaluator import describe_protocol
    from bisenet_jax.models import create_model

    if FLAGS.model:
        from bisenet_jax.export import load_exported
        try:
            model, variables = load_exported(FLAGS.model), {}
        except (ValueError, FileNotFoundError) as error:
            raise app.UsageError(str(error)) from None
        info = model.info.to_dict()
        dataset = model.info if FLAGS.config is None and not FLAGS.dataset else dataset_info(info)
        if dataset.mean is None:
            raise app.UsageError(f"{FLAGS.model} records no dataset: pass --dataset NAME or --config")
    else:
        variables, info = checkpoints.load_model(FLAGS.checkpoint)
        dataset = dataset_info(info)
    if dataset.num_classes != int(info["num_classes"]):
        raise app.UsageError(f"{FLAGS.checkpoint or FLAGS.model} has {info['num_classes']} classes but dataset "
                             f"{dataset.name!r} has {dataset.num_classes}; pass the dataset it was trained on")
    if not FLAGS.model:
        model = create_model(info["model_name"], int(info["num_classes"]), aux_heads=False)
    predictor = predict.Predictor(model, variables, dataset, FLAGS.eval, FLAGS.batch_size)
    print(f"{info['model_name']} ({dataset.name} colours), protocol {describe_protocol(FLAGS.eval)}")
    written = predict.predict_paths(predictor, FLAGS.input, FLAGS.output, FLAGS.outputs, FLAGS.alpha,
                                    FLAGS.video_render, FLAGS.video_frames, FLAGS.video_codec)
    print(f"wrote {len(written['images'])} image files and {len(written['videos'])} video(s) under {FLAGS.output}")
    for video in written["videos"]:
        print(f"  {video}")


if __name__ == "__main__":
    allocator.enable()  # before any output: may re-execute this command once
    app.run(main)
