"""config.data.cache_gb: decoded training records kept in memory (CachedSource) change no batch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from bisenet_jax.data import create_source, create_train_iterator
from bisenet_jax.data.reader import CachedSource


class _CountingSource:
    """Records of 4x4 pixels (64 bytes each, image and label); counts the reads of each index."""

    info = "counting"

    def __init__(self, size: int):
        self.size, self.reads = size, {}

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        self.reads[index] = self.reads.get(index, 0) + 1
        image = np.full((4, 4, 3), index, np.uint8)
        return {"image": image, "label": np.full((4, 4), index, np.uint8), "id": str(index)}


def _batches(data_config, count: int, seed: int = 0) -> list[dict]:
    iterator = create_train_iterator(data_config, global_batch_size=2, seed=seed)
    try:
        return [next(iterator) for _ in range(count)]
    finally:
        iterator.close()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_cached_files_give_the_same_batches_as_decoding_them_every_epoch(camvid_generated_root, data_config,
                                                                         num_workers):
    # 3 training images, batches of 2: 6 batches are 4 epochs, so later epochs read the cache. Unshuffled,
    # batches 0 and 3 hold the same two images (stream positions 0-1 and 6-7).
    fields = dict(crop_size=(16, 24), num_workers=num_workers, shuffle=False)
    plain = data_config("camvid", camvid_generated_root, **fields)
    cached = data_config("camvid", camvid_generated_root, cache_gb=0.01, **fields)
    expected, actual = _batches(plain, 6), _batches(cached, 6)
    for a, b in zip(expected, actual):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    # The same images a later epoch, from the cache, still get a new augmentation.
    assert not np.array_equal(actual[0]["image"], actual[3]["image"])


@pytest.mark.parametrize("cache_gb, most, least", [(0.0, None, 12), (0.01, 5, 3)])
def test_the_iterator_decodes_each_image_once_with_the_cache(camvid_generated_root, data_config, monkeypatch,
                                                              cache_gb, most, least):
    from bisenet_jax.data import decode, reader

    decoded = []

    def counting_read_image(path, *args, **kwargs):
        if str(path).startswith(str(camvid_generated_root)):  # not another test's pipeline threads, still winding down
            decoded.append(str(path))
        return decode.read_image(path, *args, **kwargs)

    monkeypatch.setattr(reader, "read_image", counting_read_image)
    config = data_config("camvid", camvid_generated_root, crop_size=(16, 24), cache_gb=cache_gb)
    _batches(config, 6)  # 12 records: 4 epochs of the 3 images
    # With the cache: each image once, or twice where both pipeline threads met it before it was cached.
    assert len(decoded) >= least and (most is None or len(decoded) <= most)
    assert len(set(decoded)) == 3


def test_a_replaced_field_does_not_reach_the_cache():
    cached = CachedSource(_CountingSource(2), max_bytes=10_000)
    for _ in range(2):
        record = cached[1]
        assert record["image"][0, 0, 0] == 1
        record["image"] = np.zeros((4, 4, 3), np.uint8)  # a new dict each read: the cached record is untouched


def test_each_record_is_read_once_and_its_arrays_are_read_only():
    source = _CountingSource(5)
    cached = CachedSource(source, max_bytes=10_000)
    for _ in range(3):
        for index in range(5):
            assert cached[index]["image"][0, 0, 0] == index
    assert source.reads == {i: 1 for i in range(5)}
    assert cached.cached_bytes == 5 * 64 and not cached.full
    with pytest.raises(ValueError, match="read-only"):
        cached[2]["image"][0, 0, 0] = 7  # a transform writing into its input would corrupt later epochs
    assert len(cached) == 5


def test_records_beyond_the_cap_are_decoded_on_every_read():
    source = _CountingSource(4)
    cached = CachedSource(source, max_bytes=2 * 64)
    for _ in range(3):
        for index in range(4):
            assert cached[index]["label"][0, 0] == index
    assert source.reads == {0: 1, 1: 1, 2: 3, 3: 3}
    assert cached.full and cached.cached_bytes == 128


def test_a_pickled_cache_starts_empty():
    # grain pickles the source into each worker process: the decoded records must not travel with it.
    source = _CountingSource(3)
    cached = CachedSource(source, max_bytes=10_000)
    cached[0], cached[1]
    clone = pickle.loads(pickle.dumps(cached))
    assert clone.cached_bytes == 0 and clone.max_bytes == 10_000
    assert clone[1]["image"][0, 0, 0] == 1
    assert clone.source.reads == {0: 1, 1: 2}  # the clone read index 1 again: it had no records
    assert source.reads == {0: 1, 1: 1}


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), 1e-12, None])
def test_a_bad_cache_size_names_the_field(data_config, value):
    config = data_config("demo")
    config.cache_gb = value
    with pytest.raises(ValueError, match=r"config\.data\.cache_gb=.*expected a finite number of GiB >= 0"):
        create_train_iterator(config, global_batch_size=2, seed=0)


def test_strict_mode_still_raises_through_the_cache(files, tmp_path, data_config):
    files.write_image(tmp_path / "images" / "a.png", files.random_image(0))
    files.write_image(tmp_path / "labels" / "a.png", files.label_with([0, 1, 5]))
    config = data_config("custom", tmp_path, custom={"num_classes": 3}, strict=True)
    cached = CachedSource(create_source(config, "train"), max_bytes=10**6)
    for _ in range(2):  # an invalid record is never cached: every read raises
        with pytest.raises(ValueError, match=r"labels/a.png: label ids 5 \(1 px\)"):
            cached[0]
    assert cached.cached_bytes == 0
