"""What a person watches: a tqdm progress bar, TensorBoard event files (tensorboardX, no TensorFlow
needed) and a JSON-lines metrics log. Only process 0 writes."""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str | pathlib.Path, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.workdir = pathlib.Path(workdir)
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(self.workdir / "tensorboard"))
            self._jsonl = open(self.workdir / "metrics.jsonl", "a")

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": float(v) for k, v in values.items()}
        for key, value in values.items():
            self._tb.add_scalar(key, value, step)
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        self._jsonl.flush()

    def images(self, step: int, name: str, images: Sequence[np.ndarray]) -> None:
        """uint8 (H, W, 3) images, e.g. input | ground truth | prediction side by side."""
        if not self.enabled:
            return
        for i, image in enumerate(images):
            self._tb.add_image(f"{name}/{i}", np.asarray(image), step, dataformats="HWC")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not (enabled and jax.process_index() == 0),
                dynamic_ncols=True, unit="step", desc="train")
