r"""Evaluate a checkpoint on a split: a per-class table on the console and a JSON file.

  python scripts/evaluate.py --config configs/cityscapes_bisenetv1_r18.py --checkpoint runs/cs_r18
  python scripts/evaluate.py --config configs/cityscapes_bisenetv1_r18.py --checkpoint runs/cs_r18 \
      --config.eval.mode=msf --config.eval.scales="(0.5,0.75,1.0,1.25,1.5,1.75)" --config.eval.flip=True
  python scripts/evaluate.py --config configs/cityscapes_bisenetv1_r18.py --checkpoint runs/cs_r18 \
      --config.eval.mode=ssc --config.eval.crop_size="(1024,1024)" --config.eval.stride=0.6667
  python scripts/evaluate.py --config configs/cityscapes_bisenetv1_r18.py --model r18_int8.onnx  # an exported file

--checkpoint is a model directory or a training workdir, local or gs:// (its best step by
validation mIoU, else the latest). The dataset, its root and the split come from the config (--config.data.root=...,
--config.eval.split=...). The JSON goes to --output, by default
<checkpoint>/eval/<dataset>_<split>_<mode>.json (for --model: beside the file). Multi-host: run the same
command on every host.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from bisenet_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("checkpoint", None, "Model directory or training workdir to evaluate.")
flags.DEFINE_string("model", None, "Instead of --checkpoint: an exported .onnx, .tflite or .stablehlo file.")
flags.DEFINE_string("output", "", "JSON file for the results (default: <checkpoint>/eval/<dataset>_<split>_<mode>.json).")
flags.DEFINE_integer("max_batches", 0, "Evaluate only the first N batches (a quick check; 0 = the whole split).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.mark_flags_as_required(["config"])
flags.mark_flags_as_mutual_exclusive(["checkpoint", "model"], required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # orbax logs every restore step at INFO
        logging.set_verbosity(logging.WARNING)
    from bisenet_jax.train import distributed
    distributed.initialize()

    import jax

    from bisenet_jax import checkpoints, data, paths
    from bisenet_jax.evaluation import evaluator
    from bisenet_jax.models import create_model

    config = FLAGS.config
    source = FLAGS.checkpoint or FLAGS.model
    if FLAGS.model:  # an exported file runs in place of the Flax module (its apply works under jit)
        from bisenet_jax.export import load_exported
        model, variables = load_exported(FLAGS.model), {}
        info = {"model_name": model.info.model_name, "num_classes": model.info.num_classes}
    else:
        variables, info = checkpoints.load_model(FLAGS.checkpoint)
    dataset = data.get_dataset_info(config.data)
    model_name, num_classes = info["model_name"], int(info["num_classes"])
    if num_classes != dataset.num_classes:
        raise app.UsageError(
            f"{source} has {num_classes} classes but dataset {dataset.name!r} of "
            f"{config_flags.get_config_filename(FLAGS['config'])} has {dataset.num_classes}; "
            "pass the config the checkpoint was trained with")
    if model_name != config.model.name:
        print(f"note: {source} holds {model_name} (config says {config.model.name}); evaluating {model_name}")
    if not FLAGS.model:
        model = create_model(model_name, num_classes, dtype=config.model.dtype, aux_heads=False)

    split = config.eval.split or config.data.eval_split
    batches = data.create_eval_dataset(config.data, split, config.eval.batch_size)
    results = evaluator.evaluate(model, variables, batches, num_classes, dataset.ignore_label, config.eval,
                                 progress=FLAGS.progress, class_names=dataset.class_names,
                                 max_batches=FLAGS.max_batches or None)
    results.update(checkpoint=str(paths.path(source, absolute=True)), model=model_name,
                   dataset=dataset.name, split=split, step=info.get("step"), dtype=str(config.model.dtype),
                   partial=bool(FLAGS.max_batches))
    print(f"{model_name} on {dataset.name} {split}" + (f" (step {info['step']})" if info.get("step") is not None else ""))
    print(evaluator.format_results(results))
    if FLAGS.max_batches:
        print(f"PARTIAL: only the first {FLAGS.max_batches} batches were evaluated (--max_batches)")
    default_dir = paths.path(FLAGS.checkpoint) / "eval" if FLAGS.checkpoint else paths.path(FLAGS.model).parent
    output = paths.path(FLAGS.output) if FLAGS.output else (
        default_dir / f"{dataset.name}_{split}_{config.eval.mode}_{paths.path(source).name}.json"
        if FLAGS.model else default_dir / f"{dataset.name}_{split}_{config.eval.mode}.json")
    if jax.process_index() == 0:  # one writer; a local file, or one uploaded to gs://
        with paths.staged_output(output) as local:
            evaluator.save_results(results, local)
    print(f"results: {output}")


if __name__ == "__main__":
    cli.run(main)
