"""Where Tune keeps a sweep's state: a local folder, or object storage (`s3://`, `gs://`) that every node reaches.

Ray reads and writes either through pyarrow's filesystems; amctl's own few
operations on it (join, exists, remove) go through the same, so a sweep on
S3 is resumed, replaced and deleted exactly like one in `~/.amctl/ray`.
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# a driver killed at any moment loses at most 2 s of Tune state, which a relaunch makes good (callbacks.repoint: the
# newest whole checkpoint on storage; tracking.Deliveries: no step logged twice).  Saved every 0.5 s, the state cost
# the driver a quarter to a third of its CPU all through a run, taken from the trial's cores (bench/overhead.py
# --only launch, TUNE_GLOBAL_CHECKPOINT_S=0.5 against this: 0.047 and 0.037 cores against 0.033 and 0.028)
LOCAL_SYNC_S = "2"
REMOTE_SYNC = "auto"  # Tune's adaptive period (≥ 10 s, ≤ 5 % of the time): every sync is a bucket upload


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(root: str, *parts: str) -> str:
    return posixpath.join(root, *parts) if is_remote(root) else os.path.join(root, *parts)


def sync_period(root: str) -> str:
    """TUNE_GLOBAL_CHECKPOINT_S for this storage: how often the driver saves the experiment's state there."""
    return REMOTE_SYNC if is_remote(root) else LOCAL_SYNC_S


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    if not is_remote(uri):
        return os.path.exists(uri)
    import pyarrow.fs

    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def remove(uri: str) -> None:
    """Delete a folder and everything under it; one that is not there is no error."""
    if not is_remote(uri):
        shutil.rmtree(uri, ignore_errors=True)
    elif exists(uri):
        fs, path = _fs(uri)
        fs.delete_dir(path)


def put_folder(local: str | os.PathLike, uri: str) -> None:
    """Copy a local folder to `uri`, replacing what was there."""
    remove(uri)
    if not is_remote(uri):
        shutil.copytree(local, uri)
        return
    import pyarrow.fs

    pyarrow.fs.copy_files(str(local), uri)


@contextmanager
def local_folder(uri: str) -> Iterator[Path]:
    """The folder at `uri` as a local path for the block: itself on local storage, a temporary download otherwise."""
    if not is_remote(uri):
        yield Path(uri)
        return
    import tempfile

    import pyarrow.fs

    with tempfile.TemporaryDirectory(prefix="amctl-fetch-") as tmp:
        pyarrow.fs.copy_files(uri, tmp)
        yield Path(tmp)


def whole_checkpoints(fs, folder: str, prefix: str, file: str) -> tuple[list[str], list[str]]:
    """A trial folder's checkpoint folders (`prefix` + index), oldest first: (whole ones, broken ones).

    Whole: its `file` is a complete zip (torch.save's format).  A copy cut short by a killed trial lacks the
    zip's closing directory, and one never started lacks the file: both are broken.
    """
    import pyarrow.fs

    infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(prefix))
    whole, broken = [], []
    for name in names:
        path = posixpath.join(folder, name)
        (whole if _is_zip(fs, posixpath.join(path, file)) else broken).append(path)
    return whole, broken


def _is_zip(fs, path: str) -> bool:
    """Whether the file ends with a zip's closing record (read from its last 64 KiB: all that record can span)."""
    import pyarrow.fs

    info = fs.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File:
        return False
    tail = min(info.size, (1 << 16) + 22)
    with fs.open_input_file(path) as f:
        return zipfile.is_zipfile(io.BytesIO(f.read_at(tail, info.size - tail)))
