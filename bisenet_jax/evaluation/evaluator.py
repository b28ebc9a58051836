"""Evaluation protocols (ss, ssc, msf, mscf) and the split-level evaluation loop.

Scores are compared with the labels at the image's original resolution and summed into one confusion
matrix per split (not per image): IoU_c = TP / (TP + FP + FN), no +1 in the denominator, averaged over
the classes present in the ground truth or the prediction. The protocols (the usual ones of the
BiSeNet papers, e.g. ssc with 1024x1024 crops at stride 2/3, msf with scales 0.5-1.75 and flip):

- ``ss``: the whole image in one forward pass, any size (>= 32 pixels a side).
- ``ssc``: sliding crops of ``crop_size`` with ``stride``; logits are averaged where crops
  overlap. Images (or scaled images) smaller than the crop are padded at the bottom/right with 0
  (the dataset's mean colour after normalisation) and the padding is cut from the result.
- ``msf``: the image resized (bilinear) by each of ``scales``, plus its horizontal flip when
  ``flip``; each output is resized back to the image size, turned into softmax probabilities, and
  the probabilities are summed.
- ``mscf``: ``msf`` with ``ssc`` sliding crops at every scale.

With ``size_divisor`` k > 1, every forward pass of any protocol (the whole image, a crop, a scaled
image) runs on its input padded at the bottom/right with 0 to the next multiple of k, and the padding
is cut from the logits. BiSeNet's branches meet at strides 8 to 32: on a side that 32 does not divide
(CamVid's 360 rows) the 1/32 features are resized onto the 1/8 ones, a registration training crops
never show; 32 avoids it (mmsegmentation's ``size_divisor`` in its test pipelines does the same).

Every protocol is a pure function ``scores(variables, images) -> (N, H, W, C)`` (logits for
ss/ssc, summed probabilities for msf/mscf) traced into one XLA program per image shape, so a split
of same-sized images compiles once.
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from tqdm.auto import tqdm

from bisenet_jax import xla_flags
from bisenet_jax.data import make_global_batch
from bisenet_jax.evaluation import metrics as metrics_lib
from bisenet_jax.models import resize

MODES = ("ss", "ssc", "msf", "mscf")
ScoreFn = Callable[[Any, jax.Array], jax.Array]


def default_eval_config() -> ml_collections.ConfigDict:
    """The evaluation settings, embedded as ``config.eval`` in every experiment config."""
    config = ml_collections.ConfigDict()
    config.mode = "ss"  # ss | ssc | msf | mscf (see the module docstring).
    # msf / mscf: image scales and horizontal flip (the usual Cityscapes multi-scale protocol).
    config.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    config.flip = True
    # ssc / mscf: crop (height, width) and stride. A stride <= 1 is a fraction of the crop size
    # (rounded up to whole pixels), a stride > 1 is in pixels.
    config.crop_size = (1024, 1024)
    config.stride = 2.0 / 3.0
    # Pad each forward pass's input at the bottom/right to a multiple of this (0 or 1: off; 32
    # registers V2's and V1's 1/32 features on the 1/8 ones at any image size); cut from the logits.
    config.size_divisor = 0
    # Images per evaluation batch (at original resolution; a short last batch is padded with
    # ignored pixels, so it reuses the same compiled program).
    config.batch_size = 1
    # Split to evaluate; empty means the data config's eval_split.
    config.split = ""
    return config


# --------------------------------------------------------------------------------------------
# Protocols: pure functions of (variables, images), traced under jit by the callers below.


def model_logits_fn(model: Any) -> ScoreFn:
    """``(variables, images) -> logits`` of a Flax segmentation model in inference mode."""
    return lambda variables, images: model.apply(variables, images, train=False)


def check_size_divisor(value: Any) -> int:
    """``eval_config.size_divisor`` as an int >= 0 (0 and 1 mean off), or a ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"eval size_divisor must be a whole number >= 0 (0 or 1: no padding; e.g. 32), got {value!r} "
                         "(--config.eval.size_divisor)")
    return int(value)


def padded_logits_fn(logits_fn: ScoreFn, divisor: int) -> ScoreFn:
    """``logits_fn`` on its images padded at the bottom/right with 0 (the mean colour after
    normalisation) to multiples of ``divisor``, the padding cut from the logits; ``divisor`` <= 1: as is."""
    if divisor <= 1:
        return logits_fn

    def fn(variables, images):
        h, w = images.shape[1], images.shape[2]
        pad_h, pad_w = -h % divisor, -w % divisor
        if not (pad_h or pad_w):
            return logits_fn(variables, images)
        padded = jnp.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        return logits_fn(variables, padded)[:, :h, :w]
    return fn


def stride_pixels(crop: int, stride: float) -> int:
    """A stride given as a fraction of the crop (<= 1) or in pixels (> 1), in whole pixels."""
    if stride <= 0:
        raise ValueError(f"eval stride must be positive (a fraction of the crop <= 1, or pixels), got {stride}")
    return max(1, math.ceil(crop * stride)) if stride <= 1 else int(stride)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of crops of ``crop`` pixels covering ``size`` pixels; the last one ends at the edge."""
    if size <= crop:
        return [0]
    count = math.ceil((size - crop) / stride) + 1
    return [min(i * stride, size - crop) for i in range(count)]


def sliding_window_logits(logits_fn: ScoreFn, variables: Any, images: jax.Array,
                          crop_size: Sequence[int], stride: float) -> jax.Array:
    """Logits from sliding crops, averaged where crops overlap: (N, H, W, 3) -> (N, H, W, C).

    The crops run one after another in a ``lax.scan`` (one compiled forward pass, bounded memory).
    """
    n, h, w, channels = images.shape
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    padded_h, padded_w = max(h, crop_h), max(w, crop_w)
    images = jnp.pad(images, ((0, 0), (0, padded_h - h), (0, padded_w - w), (0, 0)))
    starts = [(y, x) for y in window_starts(padded_h, crop_h, stride_pixels(crop_h, stride))
              for x in window_starts(padded_w, crop_w, stride_pixels(crop_w, stride))]
    if len(starts) == 1:
        return logits_fn(variables, images)[:, :h, :w]

    crop_shape = (n, crop_h, crop_w, channels)
    out = jax.eval_shape(logits_fn, variables, jax.ShapeDtypeStruct(crop_shape, images.dtype))
    coverage = np.zeros((padded_h, padded_w), np.float32)  # crops covering each pixel (static)
    for y, x in starts:
        coverage[y:y + crop_h, x:x + crop_w] += 1

    def add_crop(total, start):
        corner = (0, start[0], start[1], 0)
        logits = logits_fn(variables, jax.lax.dynamic_slice(images, corner, crop_shape))
        window = jax.lax.dynamic_slice(total, corner, logits.shape)
        return jax.lax.dynamic_update_slice(total, window + logits, corner), None

    total = jnp.zeros((n, padded_h, padded_w, out.shape[-1]), out.dtype)
    total, _ = jax.lax.scan(add_crop, total, jnp.asarray(starts, jnp.int32))
    return (total / coverage[None, :, :, None])[:, :h, :w]


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The image size at ``scale`` (rounded to whole pixels)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def multi_scale_probabilities(logits_fn: ScoreFn, variables: Any, images: jax.Array,
                              scales: Sequence[float], flip: bool) -> jax.Array:
    """Sum over scales (and flips) of softmax(logits resized back to the image size): (N, H, W, C)."""
    if not scales:
        raise ValueError("multi-scale evaluation needs at least one scale in eval_config.scales")
    n, h, w, _ = images.shape
    total = 0.0
    for scale in scales:
        scaled = resize(images, scaled_size(h, w, scale), "bilinear")
        if flip:  # image and mirror image in one batch: one forward pass per scale
            scaled = jnp.concatenate([scaled, scaled[:, :, ::-1]], axis=0)
        logits = logits_fn(variables, scaled)
        outputs = [logits[:n], logits[n:, :, ::-1]] if flip else [logits]
        for out in outputs:
            total = total + jax.nn.softmax(resize(out, (h, w), "bilinear"), axis=-1)
    return total


def make_score_fn(logits_fn: ScoreFn, eval_config: Any) -> ScoreFn:
    """The protocol ``eval_config.mode`` as an (unjitted) ``(variables, images) -> scores`` function."""
    mode = eval_config.mode
    crop_size, stride = tuple(eval_config.crop_size), float(eval_config.stride)
    logits_fn = padded_logits_fn(logits_fn, check_size_divisor(_field(eval_config, "size_divisor")))
    if mode in ("ssc", "mscf"):
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"eval_config.crop_size must be (height, width), got {crop_size}")
        stride_pixels(min(crop_size), stride)  # validates the stride

        def crop_fn(variables, images):
            return sliding_window_logits(logits_fn, variables, images, crop_size, stride)
    if mode == "ss":
        return logits_fn
    if mode == "ssc":
        return crop_fn
    if mode in ("msf", "mscf"):
        inner = logits_fn if mode == "msf" else crop_fn
        scales, flip = tuple(float(s) for s in eval_config.scales), bool(eval_config.flip)
        return lambda variables, images: multi_scale_probabilities(inner, variables, images, scales, flip)
    raise ValueError(f"unknown eval mode {mode!r}; expected one of {', '.join(MODES)} (--config.eval.mode)")


# --------------------------------------------------------------------------------------------
# Jitted entry points (also what the training loop calls for periodic validation).


def make_predict_fn(model: Any, eval_config: Any = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> Callable[[Any, jax.Array], jax.Array]:
    """Jitted ``(variables, images (N, H, W, 3)) -> class ids (N, H, W) int32``.

    Images are normalised float32, or, given the dataset's ``mean`` and ``std`` (RGB, after
    /255), uint8 RGB normalised on the device (a quarter of the host-to-device bytes).
    ``eval_config`` defaults to ``default_eval_config()`` (mode ss).
    """
    score_fn = make_score_fn(model_logits_fn(model), eval_config or default_eval_config())
    if (mean is None) != (std is None):
        raise ValueError("make_predict_fn: give both mean and std (uint8 input) or neither (normalised input)")
    offset = None if mean is None else jnp.asarray(mean, jnp.float32) * 255.0
    scale = None if std is None else 1.0 / (jnp.asarray(std, jnp.float32) * 255.0)

    def predict(variables, images):
        if offset is not None:
            images = (images.astype(jnp.float32) - offset) * scale
        return jnp.argmax(score_fn(variables, images), axis=-1).astype(jnp.int32)

    # On an x86 CPU without AVX-512, the measured faster convolution (bisenet_jax/xla_flags.py).
    return jax.jit(predict, compiler_options=xla_flags.inference_options() or None)


def make_eval_step(model: Any, num_classes: int, eval_config: Any = None,
                   compiler_options: dict[str, str] | None = None) -> Callable[..., jax.Array]:
    """Jitted ``(variables, images, labels) -> confusion (num_classes, num_classes) int32`` of one batch.

    Works on host arrays (local evaluation) and on global sharded arrays (inside a sharded training
    loop the bincount then covers the global batch and the result is replicated: no host sum needed).
    ``compiler_options``: by default ``xla_flags.inference_options()``.
    """
    score_fn = make_score_fn(model_logits_fn(model), eval_config or default_eval_config())

    def eval_step(variables, images, labels):
        predictions = jnp.argmax(score_fn(variables, images), axis=-1)
        return metrics_lib.confusion_matrix(labels, predictions, num_classes)

    if compiler_options is None:
        compiler_options = xla_flags.inference_options()
    return jax.jit(eval_step, compiler_options=compiler_options or None)


# --------------------------------------------------------------------------------------------
# The split-level loop.


def evaluate(model: Any, variables: Any, batches: Iterable[dict], num_classes: int, ignore_label: int,
             eval_config: Any = None, progress: bool = True, class_names: Sequence[str] | None = None,
             max_batches: int | None = None, sharding: NamedSharding | None = None) -> dict[str, Any]:
    """Evaluates ``model`` on this process's ``batches`` and returns the split's metrics.

    ``batches`` yield ``{"image": float32 (B, H, W, 3) normalised, "label": int (B, H, W), "id"}``
    at the original resolution (``bisenet_jax.data.create_eval_dataset``; its ``len`` is the number
    of images, used for the progress bar). Each process evaluates its own batches on its local
    device; one confusion matrix is then summed across processes, so every process must call this
    (with its own shard of the split). Padding examples (id ``""``, labels all ignored) add nothing.
    ``max_batches`` stops early (a quick check, not a result).

    With ``sharding`` (the batch sharding of a training mesh, whose replicated ``variables`` are
    then used as they are), each batch is padded to a multiple of the local devices and split over
    the mesh as one global batch, so evaluation inside a training run uses every device. With
    several processes that needs the same image size on every process at each step (a fixed-size
    dataset); a step where the sizes differ is evaluated process-locally instead.

    Returns ``compute_metrics`` plus ``mode``, ``num_images``, ``seconds``, ``class_names``,
    ``confusion_matrix`` (rows: ground truth, columns: prediction) and ``eval_config``.
    """
    eval_config = eval_config or default_eval_config()
    eval_step = _eval_step(model, num_classes, eval_config)
    local_variables = _local_copy(variables) if sharding is None else None
    multiple = 1 if sharding is None else len(sharding.mesh.local_devices)
    total = len(batches) if hasattr(batches, "__len__") else None
    confusion = np.zeros((num_classes, num_classes), np.int64)  # of process-local steps: summed across processes
    global_confusion = np.zeros((num_classes, num_classes), np.int64)  # of global steps: already complete
    num_images, batch_size, pending = 0, 0, None
    start = time.perf_counter()
    bar = tqdm(total=total, desc=f"eval {describe_protocol(eval_config)}", unit="img", dynamic_ncols=True,
               disable=not progress or jax.process_index() != 0)
    for step, batch in enumerate(batches):
        if max_batches is not None and step >= max_batches:
            break
        batch_size = max(batch_size, -(-len(batch["image"]) // multiple) * multiple)
        images, labels, count = _pad_batch(batch, batch_size, ignore_label)
        if sharding is not None and _same_shape_everywhere(images.shape):
            global_batch = make_global_batch({"image": images, "label": labels}, sharding)
            result = (global_confusion, eval_step(variables, global_batch["image"], global_batch["label"]))
        else:
            if local_variables is None:
                local_variables = _local_copy(variables)
            result = (confusion, eval_step(local_variables, images, labels))  # dispatched asynchronously
        if pending is not None:  # read the previous batch while this one runs
            np.add(pending[0], metrics_lib.to_host(pending[1]), out=pending[0])  # accumulate in place
            bar.set_postfix(mIoU=f"{100 * metrics_lib.compute_metrics(confusion + global_confusion)['miou']:.2f}")
        pending = result
        num_images += sum(1 for i in batch["id"] if i != "") if "id" in batch else count
        bar.update(count)
    if pending is not None:
        np.add(pending[0], metrics_lib.to_host(pending[1]), out=pending[0])
    bar.close()
    totals = metrics_lib.sum_across_processes(np.append(confusion.reshape(-1), num_images))
    confusion = totals[:-1].reshape(num_classes, num_classes) + global_confusion
    num_images = int(totals[-1])
    return {
        "mode": eval_config.mode,
        **metrics_lib.compute_metrics(confusion),
        "num_images": num_images,
        "seconds": time.perf_counter() - start,
        "class_names": list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)],
        "confusion_matrix": confusion.tolist(),
        "eval_config": _to_dict(eval_config),
    }


def describe_protocol(eval_config: Any) -> str:
    """One line saying what was measured, e.g. ``msf: scales (0.5, 1.0), flip``."""
    mode = eval_config.mode
    parts = [mode]
    if mode in ("msf", "mscf"):
        parts.append(f"scales {tuple(eval_config.scales)}" + (", flip" if eval_config.flip else ", no flip"))
    if mode in ("ssc", "mscf"):
        parts.append(f"crop {tuple(eval_config.crop_size)}, stride {eval_config.stride:g}")
    divisor = _field(eval_config, "size_divisor")
    if divisor > 1:
        parts.append(f"inputs padded to multiples of {divisor}")
    return ": ".join([parts[0], "; ".join(parts[1:])]) if len(parts) > 1 else mode


def format_results(results: dict[str, Any]) -> str:
    """The per-class table with a header naming the protocol and the number of images."""
    header = (f"protocol {describe_protocol(ml_collections.ConfigDict(results['eval_config']))} | "
              f"{results['num_images']} images | {results['num_pixels']} labelled pixels | "
              f"{results['seconds']:.1f} s")
    return header + "\n" + metrics_lib.format_table(results, results["class_names"])


def save_results(results: dict[str, Any], path: str | pathlib.Path) -> pathlib.Path:
    """Writes ``results`` as strict JSON (NaN -> null) on process 0; returns the path."""
    path = pathlib.Path(path)
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_nan_to_none(results), indent=1, allow_nan=False)
        # One line per list of numbers (a confusion-matrix row, the per-class IoUs), not per number.
        text = re.sub(r"\[\s*([-+\d.eEnul,\s]+?)\s*\]",
                      lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
        path.write_text(text + "\n")
    return path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


_PROTOCOL_FIELDS = ("mode", "scales", "flip", "crop_size", "stride", "size_divisor")
_PROTOCOL_DEFAULTS = {"size_divisor": 0}  # fields added later: configs saved before them read as off


def _field(eval_config: Any, key: str) -> Any:
    """``eval_config[key]``, or its ``_PROTOCOL_DEFAULTS`` value in a config saved before the field existed."""
    return eval_config[key] if key in eval_config else _PROTOCOL_DEFAULTS[key]


def _protocol(eval_config: Any) -> tuple:
    """The fields of eval_config that define the computation, hashable."""
    return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                 for k, v in ((k, _field(eval_config, k)) for k in _PROTOCOL_FIELDS))


def _eval_step(model: Any, num_classes: int, eval_config: Any) -> Callable[..., jax.Array]:
    """The cached eval step for ``eval_config`` and the inference options in force now (read at each
    evaluation, so that a change of ``XLA_FLAGS`` or the opt-out between evaluations is taken)."""
    options = tuple(sorted(xla_flags.inference_options().items()))
    return _cached_eval_step(model, num_classes, _protocol(eval_config), options)


@functools.lru_cache(maxsize=16)
def _cached_eval_step(model: Any, num_classes: int, protocol: tuple, options: tuple) -> Callable[..., jax.Array]:
    """One jitted eval step per (model, classes, protocol, compiler options): periodic validation in a
    training run compiles once, not at every evaluation. (Flax modules hash by their fields.)"""
    return make_eval_step(model, num_classes, ml_collections.ConfigDict(dict(protocol)), dict(options))


def _pad_batch(batch: dict, batch_size: int, ignore_label: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pads a short batch to ``batch_size`` with zero images and ignored labels (no recompile)."""
    images, labels = np.asarray(batch["image"], np.float32), np.asarray(batch["label"], np.int32)
    if images.ndim != 4 or labels.shape != images.shape[:3]:
        raise ValueError(f"eval batch: expected image (B, H, W, 3) and label (B, H, W), "
                         f"got {images.shape} and {labels.shape}")
    count = images.shape[0]
    if count < batch_size:
        extra = batch_size - count
        images = np.concatenate([images, np.zeros((extra, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.full((extra, *labels.shape[1:]), ignore_label, labels.dtype)])
    return images, labels, count


def _same_shape_everywhere(shape: tuple[int, ...]) -> bool:
    """Whether every process holds a batch of this shape at this step (always, with one process)."""
    if jax.process_count() == 1:
        return True
    shapes = multihost_utils.process_allgather(np.asarray(shape, np.int64))
    return bool(np.all(shapes == shapes[0]))


def _local_copy(variables: Any) -> Any:
    """Variables usable by a process-local computation: global arrays spanning hosts are gathered."""
    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return multihost_utils.process_allgather(leaf, tiled=True)
        return leaf
    return jax.tree_util.tree_map(local, variables)


def _to_dict(config: Any) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)
