"""grain input pipelines: infinite, sharded, checkpointable training batches and exact eval batches.

Training (`create_train_iterator`), per process:

    source [-> CachedSource (data.cache_gb)] -> seed -> shuffle -> repeat
           -> random_map(draw each example's augmentation)
           -> batch(global_batch_size // process_count, applying the augmentations into the batch)
           -> [process_index::process_count]
           -> to_iter_dataset (threads) [-> mp_prefetch (worker processes)]

Shuffling and augmentation happen on the *global* stream before the per-process slice: example k
of the stream has the same augmentation RNG whatever the number of processes, and global batch t
is always stream positions [t * global_batch, (t + 1) * global_batch), in that order: process p
holds the contiguous block of it that becomes rows [p * local, (p + 1) * local) of the global
array, so every example meets the same per-row randomness (dropout masks) for any number of
processes. Each process reads and transforms only its own positions. Batching is a `MapDataset` step, so batch t is the same for any
number of worker processes or threads. `TrainIterator` keeps the state as that batch index, so a
state saved with `get_state` (or grain's orbax `CheckpointHandler`) restores into an iterator with
any number of workers, or processes, and replays exactly the batches the interrupted run would
have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from bisenet_jax.data.info import DatasetInfo
from bisenet_jax.data.reader import CachedSource
from bisenet_jax.data.registry import create_source
from bisenet_jax.data.transforms import EvalTransform, SampleAugmentation, TrainBatcher, TrainTransform


def create_train_iterator(
    data_config: Any,
    global_batch_size: int,
    seed: int,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainIterator:
    """Infinite iterator of this process's training batches (a checkpointable grain DatasetIterator).

    Batches are {"image": float32 (B, crop_h, crop_w, 3), "label": int32 (B, crop_h, crop_w)} with
    B = global_batch_size // process_count. `process_index` / `process_count` default to JAX's.
    """
    source = create_source(data_config, data_config.train_split)
    cache = cache_bytes(data_config)
    if cache:
        source = CachedSource(source, max_bytes=cache)
    dataset = train_dataset(
        source,
        train_transform(data_config, source.info),
        global_batch_size,
        seed,
        shuffle=data_config.shuffle,
        process_index=process_index,
        process_count=process_count,
        shared_memory=data_config.num_workers > 0,
    )
    return TrainIterator(dataset, global_batch_size, data_config)


def cache_bytes(data_config: Any) -> int:
    """`data_config.cache_gb` in bytes (GiB, 2**30), 0 for no cache; a clear error for anything else."""
    cache_gb = data_config.get("cache_gb", 0.0)
    if (not isinstance(cache_gb, (int, float)) or isinstance(cache_gb, bool) or not math.isfinite(cache_gb)
            or cache_gb < 0 or 0 < cache_gb * 2**30 < 1):
        raise ValueError(f"config.data.cache_gb={cache_gb!r}: expected a finite number of GiB >= 0 (0 turns the "
                         "cache off), e.g. --config.data.cache_gb=1")
    return int(cache_gb * 2**30)


def train_transform(data_config: Any, info: DatasetInfo) -> TrainTransform:
    """The TrainTransform configured by `data_config` for the dataset described by `info`."""
    return TrainTransform(
        crop_size=tuple(data_config.crop_size),
        mean=info.mean,
        std=info.std,
        ignore_label=info.ignore_label,
        scale_range=tuple(data_config.scale_range),
        scales=tuple(data_config.scales),
        hflip=data_config.hflip,
        color_jitter=data_config.color_jitter,
    )


def train_dataset(
    source: Any,
    transform: TrainTransform,
    global_batch_size: int,
    seed: int,
    *,
    shuffle: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    shared_memory: bool = False,
) -> grain.MapDataset:
    """The infinite MapDataset of this process's training batches (see the module docstring).

    Each example's augmentation is drawn from its own RNG (`random_map`, seeded by the example's
    position in the global stream); the batch function then reads the records and writes the
    augmented examples straight into the batch arrays (grain shared memory if `shared_memory`,
    for batches produced in worker processes).
    """
    process_index, process_count = _process(process_index, process_count)
    local_batch_size = local_batch_size_for(global_batch_size, process_count)
    if len(source) == 0:
        raise ValueError(f"The training source {source!r} is empty: no examples to train on.")
    dataset = grain.MapDataset.source(source).seed(seed)
    if shuffle:
        dataset = dataset.shuffle()  # A new permutation every epoch (repeat reseeds).
    dataset = dataset.repeat().random_map(SampleAugmentation(transform))
    batch_fn = TrainBatcher(transform, shared_memory=shared_memory)
    # Blocks of local_batch_size consecutive positions; global batch t is blocks t * P .. t * P + P - 1,
    # and process p takes block t * P + p (batches are computed lazily: only its own are read).
    blocks = dataset.batch(local_batch_size, drop_remainder=True, batch_fn=batch_fn)
    return blocks[process_index::process_count]


def local_batch_size_for(global_batch_size: int, process_count: int) -> int:
    """global_batch_size // process_count, checking that it divides evenly."""
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of the number of "
            f"JAX processes ({process_count}); change the batch size in the training config."
        )
    return global_batch_size // process_count


def num_examples(data_config: Any, split: str | None = None) -> int:
    """Number of examples in a split (default: the training split)."""
    return len(create_source(data_config, split or data_config.train_split))


def steps_per_epoch(data_config: Any, global_batch_size: int) -> int:
    """Training steps (global batches) that make one pass over the training split, at least 1."""
    return max(1, num_examples(data_config) // global_batch_size)


def create_eval_dataset(
    data_config: Any,
    split: str,
    batch_size: int,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> EvalDataset:
    """This process's evaluation batches at the original resolution, one pass, last batch kept.

    Batches are {"image": float32 (B, H, W, 3), "label": int32 (B, H, W), "id": list[str]}.
    """
    source = create_source(data_config, split)
    return EvalDataset(
        source,
        EvalTransform(source.info.mean, source.info.std),
        batch_size,
        ignore_label=source.info.ignore_label,
        num_threads=data_config.num_threads,
        process_index=process_index,
        process_count=process_count,
    )


class EvalDataset:
    """Iterable of evaluation batches over this process's shard of a source.

    Process p reads examples p, p + P, p + 2P, ... Consecutive examples of the same size are
    batched together (a batch ends early where the size changes, and at the end). With several
    processes, shards are padded to the same length with `padding` examples whose labels are all
    ignore and whose id is "", so every process runs the same number of steps; they add nothing
    to a confusion matrix that skips the ignore label.
    """

    def __init__(
        self,
        source: Any,
        transform: EvalTransform,
        batch_size: int,
        *,
        ignore_label: int = 255,
        num_threads: int = 2,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"Eval batch_size must be at least 1, got {batch_size}.")
        process_index, process_count = _process(process_index, process_count)
        if len(source) == 0:
            raise ValueError(f"The evaluation source {source!r} is empty: nothing to evaluate.")
        indices = list(range(process_index, len(source), process_count))
        self.num_real_examples = len(indices)
        indices += [-1] * (math.ceil(len(source) / process_count) - len(indices))
        self._dataset = (
            grain.MapDataset.source(_ShardSource(source, indices, ignore_label)).map(transform)
        )
        self._read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2, 2 * num_threads))
        self.batch_size = batch_size

    def __len__(self) -> int:
        """Examples this process yields, padding included."""
        return len(self._dataset)

    def __iter__(self) -> Iterator[dict]:
        pending: list[dict] = []
        for example in self._dataset.to_iter_dataset(self._read_options):
            if pending and example["image"].shape != pending[0]["image"].shape:
                yield _stack(pending)
                pending = []
            pending.append(example)
            if len(pending) == self.batch_size:
                yield _stack(pending)
                pending = []
        if pending:
            yield _stack(pending)


class _ShardSource:
    """source[indices[i]]; index -1 is a padding copy of the shard's first example, labels ignored."""

    def __init__(self, source: Any, indices: Sequence[int], ignore_label: int):
        self._source, self._indices, self._ignore_label = source, list(indices), ignore_label

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict:
        source_index = self._indices[index]
        if source_index >= 0:
            return self._source[source_index]
        record = dict(self._source[self._indices[0] if self._indices[0] >= 0 else 0])
        record["label"] = np.full_like(record["label"], self._ignore_label)
        record["id"] = ""
        return record

    def __repr__(self) -> str:
        return f"_ShardSource({self._source!r}, {len(self._indices)} examples)"


def _stack(examples: list[dict]) -> dict:
    return {
        "image": np.stack([e["image"] for e in examples]),
        "label": np.stack([e["label"] for e in examples]),
        "id": [e["id"] for e in examples],
    }


def make_global_batch(batch: dict, sharding: jax.sharding.Sharding | dict) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global jax.Arrays (batch axis split across processes).

    `sharding` is one Sharding for every array or a dict of them by key. Non-numeric entries
    (the eval "id" strings) stay on the host and are left out.
    """
    arrays = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            continue
        key_sharding = sharding[key] if isinstance(sharding, dict) else sharding
        arrays[key] = jax.make_array_from_process_local_data(key_sharding, value)
    return arrays


class TrainIterator(grain.DatasetIterator):
    """Checkpointable iterator over a batched training MapDataset, with a portable state.

    The state is {"next_batch": t, "global_batch_size": B}: the index of the next global batch.
    Restoring it starts a fresh grain iterator over `batches[t:]`, so it does not depend on how
    many worker processes, threads or JAX processes produced or will produce the batches. A
    state saved with another global batch size is accepted if it ends on a whole new batch.
    """

    def __init__(self, batches: grain.MapDataset, global_batch_size: int, data_config: Any):
        super().__init__()
        self._batches = batches
        self._global_batch_size = int(global_batch_size)
        self._data_config = data_config
        self._next_batch = 0
        self._iterator: grain.DatasetIterator | None = None

    def __next__(self) -> dict:
        batch = next(self._ensure_iterator())
        self._next_batch += 1
        return batch

    def get_state(self) -> dict[str, int]:
        return {"next_batch": self._next_batch, "global_batch_size": self._global_batch_size}

    def set_state(self, state: dict[str, Any]) -> None:
        saved_batch_size = int(state.get("global_batch_size", self._global_batch_size))
        examples_seen = int(state["next_batch"]) * saved_batch_size
        if examples_seen % self._global_batch_size:
            raise ValueError(
                f"Cannot resume the data iterator: the checkpoint was saved after {examples_seen} "
                f"examples (global batch size {saved_batch_size}), which is not a whole number of "
                f"batches of the current global batch size {self._global_batch_size}."
            )
        self._close_iterator()
        self._next_batch = examples_seen // self._global_batch_size

    def start_prefetch(self) -> None:
        self._ensure_iterator().start_prefetch()

    def close(self) -> None:
        self._close_iterator()
        super().close()

    def _ensure_iterator(self) -> grain.DatasetIterator:
        self._assert_not_closed()
        if self._iterator is None:
            remaining = self._batches[self._next_batch :]
            self._iterator = iter(_to_iter_dataset(remaining, self._data_config))
        return self._iterator

    def _close_iterator(self) -> None:
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None

    def __repr__(self) -> str:
        return f"TrainIterator(next_batch={self._next_batch}, global_batch_size={self._global_batch_size})"


def _to_iter_dataset(dataset: grain.MapDataset, data_config: Any) -> grain.IterDataset:
    """Threads (and worker processes when num_workers > 0) computing batches ahead of use.

    In-process, `prefetch_buffer_size` batches are computed ahead. A worker process keeps only as
    many batches in flight as it has threads, plus `worker_buffer_size` finished ones: a float32
    batch of 8 1024x1024 crops is 134 MB.
    """
    num_threads = int(data_config.num_threads)
    in_flight = num_threads if data_config.num_workers > 0 else int(data_config.prefetch_buffer_size)
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(in_flight, num_threads, 1))
    iter_dataset = dataset.to_iter_dataset(read_options)
    if data_config.num_workers > 0:
        # grain 0.2.18 reads an absl flag when it starts workers, which fails where flags were never
        # parsed (notebooks, tests, scripts without absl.app): google/grain issue #1355.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=int(data_config.num_workers),
                per_worker_buffer_size=int(data_config.worker_buffer_size),
            )
        )
    return iter_dataset


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """(process_index, process_count), JAX's where not given; validated."""
    process_index = jax.process_index() if process_index is None else int(process_index)
    process_count = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count}).")
    return process_index, process_count
