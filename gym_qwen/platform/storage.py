"""Storage on a URI: `storage=` (sweeps) and `output_dir=` (training) given as `s3://bucket/path` or any other URI
that pyarrow's filesystems read (`gs://`, `hdfs://`, `abfs://`, `file://`; `pyarrow.fs.FileSystem.from_uri`),
beside plain local paths, which never come here.

A URI may carry pyarrow's options in its query, e.g. `s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http`
for an S3-compatible server; `join` keeps the query at the end. Credentials come from where each filesystem looks
for them (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ~/.aws/, an instance role), on every
node that writes.

Writes are whole objects: an object store shows an object only once its upload completed, and on a local
filesystem (`file://`) a file is written beside its target and moved over it, so a reader never sees half of one.
"""
from __future__ import annotations

import os
import posixpath
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from .config_schema import ConfigError
from .files import atomic_write_bytes, output_folder_problem

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StorageError(ConfigError):
    """A storage URI that cannot be used (one line for the user; exit 2)."""


def is_uri(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (`scheme://...`) rather than a local path."""
    return bool(_SCHEME.match(str(path)))


def scheme(uri: str) -> str:
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else ""


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base`/`parts`: a local path joined as a path, a URI with its query (pyarrow's options) kept at the end."""
    if not is_uri(base):
        return str(Path(base, *parts))
    s = urlsplit(str(base))
    return urlunsplit((s.scheme, s.netloc, posixpath.join(s.path or "/", *parts), s.query, s.fragment))


def parent(uri: str) -> str:
    s = urlsplit(uri)
    return urlunsplit((s.scheme, s.netloc, posixpath.dirname(s.path.rstrip("/")), s.query, s.fragment))


def basename(uri: str) -> str:
    return posixpath.basename(urlsplit(uri).path.rstrip("/"))


def display(uri: str) -> str:
    """The URI without its query: what messages show."""
    s = urlsplit(uri)
    return urlunsplit((s.scheme, s.netloc, s.path, "", ""))


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:240]


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path on it) of `uri`. StorageError (one line) for a scheme pyarrow does not know or
    options it refuses."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as e:
        if "Unrecognized filesystem type" in str(e) or "not supported" in str(e).lower():
            raise StorageError(f"{display(uri)}: unknown storage scheme '{scheme(uri)}' (a local path, or a URI "
                               "pyarrow reads: s3://, gs://, hdfs://, abfs://, file://)") from None
        raise StorageError(f"{display(uri)}: {_reason(e)}") from None
    except OSError as e:
        raise StorageError(f"{display(uri)}: {_reason(e)}") from None


def storage_problem(uri: str) -> str | None:
    """Why files cannot be written under `uri`, or None: tried for real (a probe object written and deleted; on a
    local filesystem files.output_folder_problem, which removes the folders it made), so an unknown bucket,
    missing credentials or a server that does not answer are found before any work, and nothing is left."""
    try:
        fs, path = resolve(uri)
    except StorageError as e:
        return str(e).split(": ", 1)[-1]
    if isinstance(fs, pafs.LocalFileSystem):
        return output_folder_problem(path)
    probe = posixpath.join(path, f".gym-qwen-probe.{uuid.uuid4().hex}")
    bucket = path.strip("/").split("/", 1)[0]
    try:
        if fs.type_name in ("s3", "gcs") and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            return f"the bucket {bucket} was not found"
        with fs.open_output_stream(probe) as f:
            f.write(b"")
        fs.delete_file(probe)
    except Exception as e:  # noqa: BLE001 - whatever the filesystem raises, the user gets one line
        return _reason(e)
    return None


def require_storage(uri: str, what: str, error: type[Exception] = StorageError) -> None:
    """Raise `error` with one line, '<what>: cannot write there (<why>)', unless storage_problem(uri) is None."""
    problem = storage_problem(uri)
    if problem:
        raise error(f"{what}: cannot write there ({problem})")


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> str:
    """Write `data` as the whole object `uri` (made visible at once; see the module's doc). Returns `uri`."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):  # an object store has no folders to make
        fs.create_dir(posixpath.dirname(path), recursive=True)
        temp = f"{path}.tmp-{uuid.uuid4().hex}"
        with fs.open_output_stream(temp) as f:
            f.write(data)
        fs.move(temp, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)
    return uri


def upload(local: str | os.PathLike, uri: str) -> str:
    """Copy the local file `local` to `uri`, whole."""
    return write_bytes(uri, Path(local).read_bytes())


def download(uri: str, local: str | os.PathLike) -> bool:
    """Copy the object `uri` to the local file `local` if it exists; whether it did."""
    if not exists(uri):
        return False
    data = read_bytes(uri)
    atomic_write_bytes(local, lambda f: f.write(data))  # a download cut short never reads as the file
    return True
