"""Atomic file writes: a file either appears whole or not at all.

Every file the library writes (weights, token files, ``meta.json``, tokenizer files,
metrics) goes through here; it needs only the standard library, so every layer may use it. We write to ``<name>.tmp`` beside the target and ``os.replace`` it into
place only when the write finished. ``os.replace`` is atomic on POSIX and Windows when
both names are on one file system, so a crash (or Ctrl-C) mid-write leaves at worst a
stale ``.tmp`` file, never a truncated ``train.bin`` that a later run would trust.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

TMP_SUFFIX = ".tmp"


def tmp_path_for(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before it is renamed into place."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched.
    A leftover ``.tmp`` from an earlier crashed run is simply overwritten.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed and fsynced before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_file(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` to create the file, fsync it, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        write(os.fspath(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
