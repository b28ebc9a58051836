r"""Export a checkpoint for deployment: ONNX, TFLite/LiteRT or serialized StableHLO, checked against JAX.

  # ONNX, dynamic batch/height/width (opset 17), run with onnxruntime
  python scripts/export.py --checkpoint runs/demo --format onnx --output demo.onnx
  # StableHLO (jax.export, symbolic batch/height/width): jax.export.deserialize, no bisenet_jax needed
  python scripts/export.py --checkpoint runs/demo --format stablehlo --output demo.stablehlo
  # TFLite: a fixed size (any >= 32 a side), or --dynamic (multiples of 32 only)
  python scripts/export.py --checkpoint runs/demo --format tflite --output demo.tflite --height 120 --width 160
  # INT8 ONNX: static QDQ quantization calibrated on 64 training images of the model's dataset
  python scripts/export.py --checkpoint runs/demo --format onnx --output demo_int8.onnx --int8 --calibration-images 64

Every file carries the model name, class names, mean/std and palette of the dataset the checkpoint
records (or --dataset). After writing, the file is loaded back and its logits compared with the
JAX model's on random inputs: max |diff| / max |logits| is printed per size, and a difference over
1e-4 (fp32) fails the command. Run an exported file with
``scripts/predict.py --model FILE --input ... --output ...``; measure mIoU and latency with
``python -m bisenet_jax.export.measure FILE ...``. Details and measured figures: docs/export.md.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model directory or training workdir")
    parser.add_argument("--format", required=True, choices=("onnx", "tflite", "stablehlo"))
    parser.add_argument("--output", required=True, help="output file (.onnx, .tflite or .stablehlo)")
    parser.add_argument("--height", type=int, default=None, help="fixed input height (with --width)")
    parser.add_argument("--width", type=int, default=None, help="fixed input width (with --height)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width (the default)")
    parser.add_argument("--dataset", default=None, help="dataset for classes and normalisation "
                                                        "(default: the one the checkpoint records)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer")
    parser.add_argument("--int8", action="store_true", help="ONNX only: INT8 static quantization (QDQ)")
    parser.add_argument("--calibration-images", type=int, default=64, help="training images to calibrate on")
    parser.add_argument("--per-tensor", action="store_true", help="INT8 weights per tensor (default: per channel)")
    parser.add_argument("--int8-keep-float", action="append", default=[], metavar="NAME",
                        help="keep ONNX nodes whose name contains NAME in float32 (repeatable)")
    parser.add_argument("--data-root", default=None, help="dataset folder for calibration (datasets not generated)")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with JAX")
    args = parser.parse_args(argv)
    if (args.height is None) != (args.width is None):
        parser.error("give both --height and --width, or neither")
    if args.dynamic and args.height is not None:
        parser.error("--dynamic and --height/--width exclude each other")

    from bisenet_jax.export import ExportError, export_checkpoint

    size = None if args.height is None else (args.height, args.width)
    try:
        result = export_checkpoint(args.checkpoint, args.format, args.output, size=size, dataset=args.dataset,
                                   opset=args.opset, int8=args.int8, calibration_images=args.calibration_images,
                                   per_channel=not args.per_tensor, keep_float=args.int8_keep_float,
                                   data_root=args.data_root, check=not args.no_check)
    except (ExportError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {result['output']}: {result['model_name']}, {result['num_classes']} classes"
          + (f" ({result['dataset']})" if result["dataset"] else ", no dataset metadata")
          + f", {args.format}, input {result['size']}" + (", int8" if args.int8 else ""))
    for name, key in (("fp32 (before quantization)", "fp32_parity"), (args.format + (" int8" if args.int8 else ""),
                                                                       "parity")):
        for size_name, error in result.get(key, {}).items():
            print(f"{name} vs JAX at {size_name}: max |diff| / max |logits| = {error:.2e}")
    if not args.int8 and result.get("max_relative_error", 0.0) > 1e-4:
        print("error: the exported model does not reproduce the JAX logits within 1e-4", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
