"""``gs://`` names behind one path type: the emulator as users set it up, bad buckets, endpoints and
credentials failing fast with the URL named, and datasets read from a bucket."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from bisenet_jax import checkpoints, paths
from bisenet_jax.data import DemoSource, create_source, create_train_iterator
from bisenet_jax.data.kinds.array_record import write_array_record
from bisenet_jax.train import loop
from bisenet_jax.train.config import config_from_file

REPO = pathlib.Path(__file__).resolve().parents[2]
DERIVED = ("TENSORSTORE_GCS_HTTP_URL", "CLOUD_STORAGE_EMULATOR_ENDPOINT", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")


@pytest.fixture
def clean_env(monkeypatch):
    """No emulator variable set; whatever a test sets is removed afterwards."""
    for name in ("STORAGE_EMULATOR_HOST", *DERIVED):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_without_an_emulator_no_client_is_redirected(clean_env):
    paths.connect_emulator()
    assert not any(name in os.environ for name in DERIVED)


def test_storage_emulator_host_alone_points_tensorstore_and_array_record_at_the_emulator(clean_env):
    clean_env.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")  # host:port, as some tools write it
    paths.connect_emulator()
    assert os.environ["TENSORSTORE_GCS_HTTP_URL"] == "http://127.0.0.1:4443"
    assert os.environ["CLOUD_STORAGE_EMULATOR_ENDPOINT"] == "http://127.0.0.1:4443"
    assert os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"


def test_a_value_the_user_set_for_tensorstore_is_kept(clean_env):
    clean_env.setenv("TENSORSTORE_GCS_HTTP_URL", "http://127.0.0.1:9999")
    clean_env.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    paths.connect_emulator()
    assert os.environ["TENSORSTORE_GCS_HTTP_URL"] == "http://127.0.0.1:9999"


def test_local_names_stay_pathlib_paths(tmp_path):
    assert paths.path(tmp_path / "a") == tmp_path / "a" and type(paths.path(tmp_path)) is type(tmp_path)
    assert paths.path("run", absolute=True) == pathlib.Path.cwd() / "run"


def test_a_url_without_a_usable_bucket_name_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"gs://ab/run: expected gs://BUCKET/PATH"):
        paths.path("gs://ab/run")


def test_files_copies_and_listings_work_the_same_in_a_bucket(gcs, tmp_path):
    bucket = gcs.create_bucket("bisenet-paths")
    (tmp_path / "a.txt").write_text("local")
    remote = paths.copy(tmp_path / "a.txt", paths.path(f"{bucket}/dir/sub/a.txt"))
    (paths.path(f"{bucket}/dir/b.txt")).write_text("remote")
    assert remote.read_text() == "local"
    assert [str(p) for p in paths.files_under(paths.path(f"{bucket}/dir"))] == [
        f"{bucket}/dir/b.txt", f"{bucket}/dir/sub/a.txt"]
    wanted = [paths.path(f"{bucket}/dir/b.txt"), paths.path(f"{bucket}/dir/c.txt"), tmp_path / "a.txt"]
    assert paths.missing_files(wanted) == [wanted[1]]
    assert paths.copy(remote, tmp_path / "back.txt").read_text() == "local"


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the URL, within 30 s.


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "no credentials"])
def test_a_bad_gs_workdir_fails_within_30_s_with_one_line_naming_the_url(gcs_emulator, case):
    url, expected = {
        "missing bucket": ("gs://no-such-bucket/run", "bucket 'no-such-bucket' does not exist"),
        "unreachable endpoint": ("gs://bisenet-bad/run", "did not answer within"),
        "no credentials": ("gs://bisenet-bad/run", "no Google Cloud credentials found"),
    }[case]
    emulator = {"missing bucket": "default", "unreachable endpoint": f"http://127.0.0.1:{_closed_port()}",
                "no credentials": None}[case]
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "bisenet_jax.main", "--config", "configs/tiny.py",
                          f"--workdir={url}"], cwd=REPO, env=gcs_emulator.env(emulator), capture_output=True,
                         text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert out.returncode == 1, out.stderr[-3000:]
    assert elapsed < 30, elapsed
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {url}: ") and expected in errors[0], out.stderr


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Datasets in a bucket.


def _upload_folder(folder: pathlib.Path, url: str) -> str:
    for file in folder.rglob("*"):
        if file.is_file():
            paths.copy(file, paths.path(f"{url}/{file.relative_to(folder).as_posix()}"))
    return url


def _tiny_config(**data):
    config = config_from_file(REPO / "configs" / "tiny.py")
    config.train.eval_every, config.train.num_prediction_images = -1, 0
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def test_a_custom_list_file_dataset_in_a_bucket_reads_the_records_of_its_local_copy(gcs, tmp_path):
    demo = DemoSource("train", num_examples=3, image_size=(40, 48))
    (tmp_path / "img").mkdir(), (tmp_path / "lbl").mkdir()
    for i in range(3):
        Image.fromarray(demo[i]["image"]).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(demo[i]["label"]).save(tmp_path / "lbl" / f"{i}.png")
    (tmp_path / "train.txt").write_text("".join(f"img/{i}.png,lbl/{i}.png\n" for i in range(3)))
    remote = _upload_folder(tmp_path, gcs.create_bucket("bisenet-custom") + "/data")
    config = _tiny_config(name="custom")
    config.data.custom.update(list_file="{split}.txt", num_classes=5)
    local_source = create_source(dict_with_root(config.data, str(tmp_path)), "train")
    remote_source = create_source(dict_with_root(config.data, remote), "train")
    assert len(remote_source) == 3 and remote_source.samples[0][0] == f"{remote}/img/0.png"
    for i in range(3):
        np.testing.assert_array_equal(remote_source[i]["image"], local_source[i]["image"])
        np.testing.assert_array_equal(remote_source[i]["label"], local_source[i]["label"])


def test_a_list_file_naming_a_missing_object_fails_naming_it(gcs, tmp_path):
    remote = gcs.create_bucket("bisenet-custom-missing") + "/data"
    paths.path(f"{remote}/train.txt").write_text("img/0.png,lbl/0.png\n")
    config = _tiny_config(name="custom")
    config.data.custom.update(list_file="{split}.txt", num_classes=5)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{remote}/img/0.png")):
        create_source(dict_with_root(config.data, remote), "train")


def dict_with_root(data_config, root: str):
    data_config = data_config.copy_and_resolve_references()
    data_config.root = root
    return data_config


def test_training_reads_array_record_shards_from_a_bucket(gcs, tmp_path):
    shards = tmp_path / "shards"
    write_array_record(DemoSource("train", num_examples=16, image_size=(64, 96)), shards, "train", num_shards=2)
    bucket = gcs.create_bucket("bisenet-shards")
    remote = _upload_folder(shards, f"{bucket}/demo")
    config = _tiny_config(name="array_record", root=remote)
    config.train.num_steps = 3  # past the tiny config's 2 warmup steps
    local_batch = next(create_train_iterator(dict_with_root(config.data, str(shards)), 4, seed=0))
    remote_batch = next(create_train_iterator(config.data, 4, seed=0))
    np.testing.assert_array_equal(remote_batch["image"], local_batch["image"])
    np.testing.assert_array_equal(remote_batch["label"], local_batch["label"])

    result = loop.train_and_evaluate(config, f"{bucket}/run")  # data and workdir in the bucket
    assert result["step"] == 3
    _, info = checkpoints.load_model(f"{bucket}/run")
    assert info["dataset"] == "demo" and info["step"] == 3


def test_write_array_record_writes_shards_into_a_bucket(gcs):
    remote = gcs.create_bucket("bisenet-shards-out") + "/demo"
    source = DemoSource("val", num_examples=3, image_size=(40, 48))
    written = write_array_record(source, remote, "val", num_shards=2)
    assert written == [f"{remote}/val-00000-of-00002.array_record", f"{remote}/val-00001-of-00002.array_record"]
    config = _tiny_config(name="array_record", root=remote)
    read = create_source(config.data, "val")
    assert len(read) == 3
    np.testing.assert_array_equal(read[2]["image"], source[2]["image"])
