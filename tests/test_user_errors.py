"""User errors end with one clear line naming the field or file: the CLIs exit 1 without a traceback wall."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _train(tmp_path, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("BISENET_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "bisenet_jax.main", "--config", str(REPO / "configs" / "tiny.py"),
                           "--workdir", str(tmp_path / "run"), "--config.data.crop_size=(16,16)", *extra],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def test_a_bad_config_value_prints_one_line_naming_the_field(tmp_path):
    result = _train(tmp_path)
    assert result.returncode == 1
    assert "error: data.crop_size=(16, 16)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_verbose_shows_the_traceback(tmp_path):
    result = _train(tmp_path, "--verbose")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "data.crop_size=(16, 16)" in result.stderr


def test_a_truncated_weights_file_is_named(tmp_path):
    import numpy as np
    import pytest
    from bisenet_jax.convert import load_torch_checkpoint, save_torch_checkpoint

    pytest.importorskip("safetensors")
    for name in ("weights.safetensors", "weights.pth"):
        if name.endswith(".pth"):
            pytest.importorskip("torch")
        path = save_torch_checkpoint({"conv.weight": np.ones((4, 3, 3, 3), np.float32)}, tmp_path / name)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 3])
        with pytest.raises(ValueError, match=rf"{name} cannot be read as a \.(safetensors|pth) checkpoint"):
            load_torch_checkpoint(path)


def test_with_stderr_closed_the_message_goes_to_stdout(tmp_path):
    # A job runner may start a command without file descriptor 2; the one line must still reach the user.
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("BISENET_VERBOSE", None)
    command = [sys.executable, "-m", "bisenet_jax.main", "--config", str(REPO / "configs" / "tiny.py"),
               "--workdir", str(tmp_path / "run"), "--config.data.crop_size=(16,16)"]
    result = subprocess.run(["sh", "-c", 'exec "$0" "$@" 2>&-', *command],  # the shell closes descriptor 2
                            stdout=subprocess.PIPE, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 1
    assert "error: data.crop_size=(16, 16)" in result.stdout
    assert not (tmp_path / "run").exists()
