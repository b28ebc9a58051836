"""Where the project reads and writes: local paths and ``gs://`` URLs behind one type.

:func:`path` turns any name a user passes (workdir, checkpoint, dataset root, list file, image,
output folder) into a pathlib-like object: a ``pathlib.Path`` for a local name, exactly as
before, and an etils ``epath.Path`` for ``gs://bucket/...``, the type orbax itself uses. Joining
with ``/``, ``open``, ``exists``, ``is_dir``, ``iterdir``, ``glob``, ``mkdir`` and
``read_text``/``write_text`` work the same on both, so callers write one code path. On GCS,
epath runs on gcsfs (fsspec), never on tf.io.gfile: installing TensorFlow (the tfds extra) must
not change which client talks to the bucket, and only gcsfs knows about emulators. What GCS lacks
is here too: :func:`files_under` (epath refuses ``**`` there), :func:`missing_files` (one listing
per folder, not one request per file) and :func:`copy` (for tools that write local files only).

The first use of a bucket in a process checks it with short timeouts (credentials, endpoint,
bucket), so a typo, a missing login or a dead endpoint fails in seconds with the URL named,
instead of retrying for minutes inside gcsfs, tensorstore or orbax.

Emulators (fake-gcs-server, ...): ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` is all a user
sets. The Python GCS clients read it themselves; :func:`connect_emulator` passes the equivalent
to the other clients, only when it is set and never over a value the user set:

  TENSORSTORE_GCS_HTTP_URL                  tensorstore, which writes orbax's arrays
  CLOUD_STORAGE_EMULATOR_ENDPOINT           the C++ GCS client inside array_record (shards)
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false   gcsfs's bucket-type lookup over gRPC, which no
                                            emulator serves (each lookup would wait 60 s)

and gcsfs gets anonymous access (``token="anon"``), as google-cloud-storage does by itself.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import Union

from etils import epath

GCS_PREFIX = "gs://"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
# The bucket check: seconds per request, and for all retries together (well under 30 s).
CHECK_REQUEST_TIMEOUT_S = 5.0
CHECK_DEADLINE_S = 10.0

Path = Union[pathlib.Path, epath.Path]

# epath picks tf.io.gfile for gs:// whenever TensorFlow is importable; gcsfs is the backend
# this project installs, configures and tests. Read by epath at its first gs:// access.
os.environ.setdefault("EPATH_USE_TF", "false")

_lock = threading.Lock()
_checked: set[tuple[str, str]] = set()  # (endpoint, bucket) pairs that passed the check


def is_remote(name: str | os.PathLike) -> bool:
    """True for a ``gs://`` URL (given as a string or as an epath)."""
    return os.fspath(name).startswith(GCS_PREFIX)


def path(name: str | os.PathLike, absolute: bool = False) -> Path:
    """``pathlib.Path(name)`` (made absolute if asked) for a local name, ``epath.Path`` for ``gs://``.

    The first ``gs://`` name of each bucket checks that bucket (see :func:`check_bucket`).
    """
    text = os.fspath(name)
    if is_remote(text):
        bucket = bucket_of(text)
        connect_emulator()
        endpoint = os.environ.get(EMULATOR_ENV, "")
        with _lock:
            known = (endpoint, bucket) in _checked
        if not known:
            check_bucket(text)
            with _lock:
                _checked.add((endpoint, bucket))
        return epath.Path(text)
    local = pathlib.Path(text)
    return local.absolute() if absolute else local


def bucket_of(url: str) -> str:
    """The bucket of ``gs://bucket/...``; a ValueError naming the URL when there is none."""
    bucket = url[len(GCS_PREFIX):].split("/", 1)[0]
    if len(bucket) < 3:
        raise ValueError(f"{url}: expected gs://BUCKET/PATH with a bucket name of at least 3 characters")
    return bucket


def connect_emulator() -> None:
    """With ``STORAGE_EMULATOR_HOST`` set, point every GCS client of the project at it (module docstring)."""
    endpoint = os.environ.get(EMULATOR_ENV, "")
    if not endpoint:
        return
    if not endpoint.startswith(("http://", "https://")):
        endpoint = f"http://{endpoint}"
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", endpoint)
    os.environ.setdefault("CLOUD_STORAGE_EMULATOR_ENDPOINT", endpoint)
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read when gcsfs is imported
    _configure_gcsfs(token="anon")


def _configure_gcsfs(token: str) -> None:
    """Defaults for the gcsfs instance epath creates (a user's own fsspec config wins).

    The listings cache is off: steps, shards and outputs are written by other clients (tensorstore)
    and other processes, and a cached listing would not show them.
    """
    import fsspec.config

    options = fsspec.config.conf.setdefault("gcs", {})
    options.setdefault("token", token)
    options.setdefault("use_listings_cache", False)


def check_bucket(url: str) -> None:
    """Fail fast, naming ``url``, when its bucket cannot be listed: no credentials, an endpoint that
    does not answer, a missing bucket, no permission. One short request (list one object)."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud import storage
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket = bucket_of(url)
    emulator = os.environ.get(EMULATOR_ENV, "")
    where = f"the emulator at {emulator} ({EMULATOR_ENV})" if emulator else "Google Cloud Storage"
    try:
        if emulator:
            client = storage.Client()  # anonymous, at the emulator's endpoint
        else:
            import google.auth

            credentials, project = google.auth.default()
            _configure_gcsfs(token="google_default")  # no silent anonymous fallback in gcsfs
            client = storage.Client(project=project or "_", credentials=credentials)
        blobs = client.list_blobs(bucket, max_results=1, timeout=CHECK_REQUEST_TIMEOUT_S,
                                  retry=DEFAULT_RETRY.with_timeout(CHECK_DEADLINE_S))
        next(iter(blobs), None)
    except auth_exceptions.DefaultCredentialsError as error:
        raise PermissionError(
            f"{url}: no Google Cloud credentials found ({_first_line(error)}). Run `gcloud auth "
            "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS (Cloud TPU and GCE VMs use "
            f"their service account); for a local emulator set {EMULATOR_ENV}=http://HOST:PORT") from None
    except api_exceptions.NotFound:
        raise FileNotFoundError(f"{url}: bucket {bucket!r} does not exist on {where}; create it (gcloud "
                                f"storage buckets create gs://{bucket}) or correct the URL") from None
    except (api_exceptions.Forbidden, api_exceptions.Unauthorized, auth_exceptions.RefreshError) as error:
        raise PermissionError(f"{url}: the credentials in use may not list bucket {bucket!r} on {where} "
                              f"({_first_line(error)}); they need storage.objects.list and write access") from None
    except (api_exceptions.RetryError, api_exceptions.GoogleAPICallError, auth_exceptions.TransportError,
            OSError) as error:
        raise ConnectionError(f"{url}: {where} did not answer within {CHECK_DEADLINE_S:.0f} s "
                              f"({_first_line(error)}); check the endpoint and the network") from None


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------------------------
# What callers need beyond the pathlib interface.


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (recursive), sorted; ``rglob("*")`` where GCS allows no ``**``."""
    if not is_remote(folder):
        return sorted(p for p in folder.rglob("*") if p.is_file())
    found = []
    for directory, _, files in folder.walk():
        base = epath.Path(_as_url(directory))
        found += [base / name for name in files]
    return sorted(found, key=os.fspath)


def _as_url(name: str | os.PathLike) -> str:
    """gcsfs lists names without the scheme: ``bucket/dir`` -> ``gs://bucket/dir``."""
    text = os.fspath(name)
    return text if text.startswith(GCS_PREFIX) else GCS_PREFIX + text.lstrip("/")


def missing_files(files: Iterable[Path]) -> list[Path]:
    """The entries of ``files`` that are not existing files, in order.

    Locally one ``is_file`` per file; on GCS one listing per folder (a dataset's list file names
    thousands of objects in a few folders, and one request each would take minutes).
    """
    files = list(files)
    if not any(is_remote(f) for f in files):
        return [f for f in files if not f.is_file()]
    listed: dict[str, set[str]] = {}
    missing = []
    for file in files:
        if not is_remote(file):
            if not file.is_file():
                missing.append(file)
            continue
        parent = os.fspath(file.parent)
        if parent not in listed:
            listed[parent] = {p.name for p in file.parent.glob("*")} if file.parent.is_dir() else set()
        if file.name not in listed[parent]:
            missing.append(file)
    return missing


@contextlib.contextmanager
def local_file(file: Path) -> Iterator[pathlib.Path]:
    """A local path with the content of ``file``: itself, or a temporary copy of a ``gs://`` file."""
    if not is_remote(file):
        yield pathlib.Path(file)
        return
    with tempfile.TemporaryDirectory(prefix="bisenet_") as staging:
        yield copy(file, pathlib.Path(staging) / file.name)


@contextlib.contextmanager
def staged_output(file: Path) -> Iterator[pathlib.Path]:
    """A local path to write ``file`` through, for writers of local files only: ``file`` itself, or
    a temporary file uploaded to the ``gs://`` URL when the block ends without an error."""
    if not is_remote(file):
        file.parent.mkdir(parents=True, exist_ok=True)
        yield pathlib.Path(file)
        return
    with tempfile.TemporaryDirectory(prefix="bisenet_") as staging:
        local = pathlib.Path(staging) / file.name
        yield local
        copy(local, file)


def copy(source: Path, destination: Path, chunk_bytes: int = 8 << 20) -> Path:
    """Copies one file, local or ``gs://`` on either side, streaming; returns ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, destination.open("wb") as writer:
        shutil.copyfileobj(reader, writer, chunk_bytes)
    return destination


# Configure the emulator for the clients as soon as the project is imported, so that libraries that
# read their variables once (tensorstore's auth, gcsfs's import) see them.
connect_emulator()
