"""grain pipelines: batch contract, checkpoint/restore, per-process shards, eval batches."""

from __future__ import annotations

import grain
import jax
import numpy as np
import pytest

from bisenet_jax.data import (
    create_eval_dataset,
    create_train_iterator,
    default_data_config,
    make_global_batch,
    steps_per_epoch,
)
from bisenet_jax.data.pipeline import EvalDataset, train_dataset
from bisenet_jax.data.transforms import EvalTransform, TrainTransform


def _config(num_train: int = 32, num_val: int = 5, **fields):
    config = default_data_config()
    config.demo.num_train = num_train
    config.demo.num_val = num_val
    config.demo.image_size = (40, 56)
    config.crop_size = (32, 48)
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def _assert_same_batches(expected: list[dict], actual: list[dict]) -> None:
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


class _CountingSource:
    """Tiny records; remembers which indices were read."""

    def __init__(self, size: int):
        self.size, self.read = size, []

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        self.read.append(int(index))
        return {"image": np.zeros((4, 4, 3), np.uint8), "label": np.zeros((4, 4), np.uint8), "id": str(index)}


def test_train_batches_follow_the_contract():
    iterator = create_train_iterator(_config(), global_batch_size=4, seed=0)
    batch = next(iterator)
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (4, 32, 48, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4, 32, 48) and batch["label"].dtype == np.int32
    assert abs(float(batch["image"].mean())) < 1.0  # normalised, not 0..255
    assert set(np.unique(batch["label"])) <= {0, 1, 2, 3, 4, 255}
    iterator.close()


def test_restored_iterator_replays_exactly_the_following_batches():
    config = _config()
    iterator = create_train_iterator(config, global_batch_size=4, seed=1)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]
    restored = create_train_iterator(config, global_batch_size=4, seed=1)
    restored.set_state(state)
    _assert_same_batches(expected, [next(restored) for _ in range(4)])
    assert restored.get_state() == {"next_batch": 7, "global_batch_size": 4}


def test_restore_across_an_epoch_boundary_and_with_another_thread_count():
    config = _config(num_train=8)
    iterator = create_train_iterator(config, global_batch_size=4, seed=2)
    for _ in range(3):  # Epoch 0 is batches 0-1; the state is in epoch 1.
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    restored = create_train_iterator(_config(num_train=8, num_threads=0), global_batch_size=4, seed=2)
    restored.set_state(state)
    _assert_same_batches(expected, [next(restored) for _ in range(3)])


def test_restore_into_an_iterator_with_a_worker_process():
    config = _config(num_train=16)
    iterator = create_train_iterator(config, global_batch_size=2, seed=3)
    next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    restored = create_train_iterator(_config(num_train=16, num_workers=1), global_batch_size=2, seed=3)
    restored.set_state(state)
    try:
        _assert_same_batches(expected, [next(restored) for _ in range(3)])
    finally:
        restored.close()


def test_orbax_checkpoint_handler_saves_and_restores_the_state(tmp_path):
    config = _config()
    iterator = create_train_iterator(config, global_batch_size=4, seed=4)
    next(iterator)
    grain.checkpoint.CheckpointHandler().save(tmp_path, item=iterator)
    expected = [next(iterator) for _ in range(2)]
    restored = grain.checkpoint.CheckpointHandler().restore(
        tmp_path, item=create_train_iterator(config, global_batch_size=4, seed=4)
    )
    _assert_same_batches(expected, [next(restored) for _ in range(2)])


def test_state_from_another_global_batch_size_resumes_at_the_same_example():
    config = _config()
    small = create_train_iterator(config, global_batch_size=2, seed=5)
    small.set_state({"next_batch": 4, "global_batch_size": 4})  # 16 examples seen
    large = create_train_iterator(config, global_batch_size=4, seed=5)
    large.set_state({"next_batch": 4, "global_batch_size": 4})
    a, b, c = next(small), next(small), next(large)
    np.testing.assert_array_equal(np.concatenate([a["image"], b["image"]]), c["image"])
    with pytest.raises(ValueError, match="not a whole number of batches"):
        large.set_state({"next_batch": 3, "global_batch_size": 2})


def test_different_seeds_give_different_batches_and_the_same_seed_the_same():
    config = _config()
    a = next(create_train_iterator(config, 4, seed=0))
    b = next(create_train_iterator(config, 4, seed=0))
    c = next(create_train_iterator(config, 4, seed=1))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])


def test_process_shards_are_disjoint_and_cover_each_epoch():
    size, global_batch, steps = 12, 4, 3  # one epoch = 3 global batches
    transform = TrainTransform((4, 4), (0.5,) * 3, (0.2,) * 3)
    shards = []
    for process_index in range(2):
        source = _CountingSource(size)
        batches = train_dataset(source, transform, global_batch, seed=0, process_index=process_index, process_count=2)
        for t in range(steps):
            assert batches[t]["image"].shape == (2, 4, 4, 3)
        assert len(source.read) == len(set(source.read)) == steps * global_batch // 2  # each once
        shards.append(set(source.read))
    assert shards[0].isdisjoint(shards[1])
    assert shards[0] | shards[1] == set(range(size))


def test_each_process_gets_its_rows_of_the_single_process_global_batch():
    """Shuffle and augmentation are on the global stream: the process count does not change them, and
    process p's examples are rows [2p, 2p + 2) of the global batch, where they land in the global array."""
    config = _config()
    single = next(create_train_iterator(config, 4, seed=6, process_index=0, process_count=1))
    halves = [next(create_train_iterator(config, 4, seed=6, process_index=p, process_count=2)) for p in range(2)]
    for p in range(2):
        assert halves[p]["image"].shape[0] == 2
        np.testing.assert_array_equal(halves[p]["image"], single["image"][2 * p:2 * p + 2])
        np.testing.assert_array_equal(halves[p]["label"], single["label"][2 * p:2 * p + 2])


def test_batch_size_must_split_evenly_over_processes():
    with pytest.raises(ValueError, match="multiple of the number of JAX processes"):
        create_train_iterator(_config(), 5, seed=0, process_index=0, process_count=2)


def test_steps_per_epoch_counts_whole_global_batches():
    assert steps_per_epoch(_config(num_train=30), 8) == 3


def test_eval_batches_keep_original_size_order_and_the_last_batch():
    batches = list(create_eval_dataset(_config(num_val=5), "val", batch_size=2))
    assert [b["id"] for b in batches] == [
        ["demo_val_00000", "demo_val_00001"], ["demo_val_00002", "demo_val_00003"], ["demo_val_00004"]
    ]
    assert batches[0]["image"].shape == (2, 40, 56, 3) and batches[0]["image"].dtype == np.float32
    assert batches[2]["label"].shape == (1, 40, 56) and batches[2]["label"].dtype == np.int32


def test_eval_batches_split_where_the_image_size_changes():
    sizes = [(8, 10), (8, 10), (6, 10), (8, 10)]
    records = [{"image": np.zeros(s + (3,), np.uint8), "label": np.zeros(s, np.uint8), "id": str(i)}
               for i, s in enumerate(sizes)]
    dataset = EvalDataset(records, EvalTransform((0.5,) * 3, (0.2,) * 3), batch_size=4, process_index=0, process_count=1)
    assert [b["id"] for b in dataset] == [["0", "1"], ["2"], ["3"]]


def test_eval_shards_are_disjoint_cover_the_split_and_have_equal_length():
    config = _config(num_val=5)
    shards = [create_eval_dataset(config, "val", 2, process_index=p, process_count=2) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    ids = [[i for b in shard for i in b["id"]] for shard in shards]
    assert ids[0] == ["demo_val_00000", "demo_val_00002", "demo_val_00004"]
    assert ids[1] == ["demo_val_00001", "demo_val_00003", ""]  # padded
    padding = list(shards[1])[-1]
    assert np.all(padding["label"][-1] == 255)  # the padding example counts for nothing


def test_make_global_batch_builds_arrays_and_drops_ids():
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch = next(iter(create_eval_dataset(_config(num_val=2), "val", 2)))
    arrays = make_global_batch(batch, sharding)
    assert set(arrays) == {"image", "label"}
    assert arrays["image"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(arrays["label"]), batch["label"])
