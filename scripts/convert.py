r"""Convert between bisenet_jax checkpoints, PyTorch state_dicts and ONNX.

  # JAX checkpoint (model directory or training workdir) -> PyTorch file
  python scripts/convert.py to-torch --checkpoint runs/cs_r18 --output bisenetv1_r18_cityscapes.pth
  python scripts/convert.py to-torch --checkpoint runs/cs_r18 --output r18.safetensors --no-aux-heads

  # PyTorch BiSeNet file -> JAX model directory (for training --config.train.init_checkpoint,
  # scripts/evaluate.py --checkpoint, scripts/predict.py)
  python scripts/convert.py from-torch --input model_final_v2_city.pth --output models/v2_city --dataset cityscapes

  # JAX checkpoint or PyTorch file -> ONNX at a fixed size (opset 17, dynamic batch), checked against
  # JAX with onnxruntime; scripts/export.py writes ONNX with dynamic height and width, TFLite, StableHLO
  python scripts/convert.py onnx --checkpoint runs/cs_r18 --output r18.onnx --height 1024 --width 2048

The model is read from the checkpoint (for PyTorch files: --model, else the safetensors metadata,
else the keys); the class count from the classifier. Needs the `torch` extra
(pip install -e ".[torch]"); .safetensors files alone need only `safetensors`.
"""
from __future__ import annotations

import argparse
import sys


def _to_torch(args) -> None:
    from bisenet_jax.convert.commands import export_to_torch
    info = export_to_torch(args.checkpoint, args.output, aux_heads=not args.no_aux_heads)
    print(f"wrote {args.output}: {info['model_name']}, {info['num_classes']} classes, {info['num_keys']} keys")


def _from_torch(args) -> None:
    from bisenet_jax.convert.commands import import_from_torch
    info = import_from_torch(args.input, args.output, model_name=args.model, dataset=args.dataset,
                             aux_heads=False if args.no_aux_heads else None)
    print(f"wrote {args.output}: {info['model_name']}, {info['num_classes']} classes"
          + (f", dataset {info['dataset']}" if info.get("dataset") else ""))


def _onnx(args) -> int:
    from bisenet_jax.convert.commands import load_any
    from bisenet_jax.export import export_variables
    variables, info = load_any(args.checkpoint, args.model)
    result = export_variables(variables, info, "onnx", args.output, size=(args.height, args.width), opset=args.opset,
                              check=not args.no_check)
    print(f"wrote {args.output}: {result['model_name']}, {result['num_classes']} classes, input (N, 3, "
          f"{args.height}, {args.width}), opset {args.opset}")
    if "max_relative_error" in result:
        error = result["max_relative_error"]
        print(f"onnxruntime vs JAX: max |diff| / max |logits| = {error:.2e}")
        if error > 1e-4:
            print("error: the ONNX model does not reproduce the JAX logits within 1e-4", file=sys.stderr)
            return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    to_torch = commands.add_parser("to-torch", help="JAX checkpoint -> .pth / .safetensors")
    to_torch.add_argument("--checkpoint", required=True, help="model directory or training workdir")
    to_torch.add_argument("--output", required=True, help="output .pth, .pt or .safetensors file")
    to_torch.add_argument("--no-aux-heads", action="store_true",
                          help="leave out the training-only auxiliary heads (a deployment file)")
    to_torch.set_defaults(run=_to_torch)

    from_torch = commands.add_parser("from-torch", help=".pth / .safetensors -> JAX model directory")
    from_torch.add_argument("--input", required=True, help="PyTorch BiSeNet .pth, .pt or .safetensors")
    from_torch.add_argument("--output", required=True, help="new model directory")
    from_torch.add_argument("--model", default=None, help="model name (default: detected from the file)")
    from_torch.add_argument("--dataset", default=None, help="dataset the weights were trained on (recorded)")
    from_torch.add_argument("--no-aux-heads", action="store_true", help="drop the auxiliary heads")
    from_torch.set_defaults(run=_from_torch)

    to_onnx = commands.add_parser("onnx", help="JAX checkpoint or PyTorch file -> ONNX")
    to_onnx.add_argument("--checkpoint", required=True, help="model directory, training workdir, .pth or .safetensors")
    to_onnx.add_argument("--output", required=True, help="output .onnx file")
    to_onnx.add_argument("--height", type=int, default=512)
    to_onnx.add_argument("--width", type=int, default=1024)
    to_onnx.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer")
    to_onnx.add_argument("--model", default=None, help="model name for PyTorch files (default: detected)")
    to_onnx.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-JAX check")
    to_onnx.set_defaults(run=_onnx)

    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
