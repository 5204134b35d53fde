"""Your own text: one file, or a folder of .txt / .md files."""
from __future__ import annotations

import os
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            f"convert it first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`"
        ) from None


def load_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file, or every ``.txt``/``.md`` file under a folder.

    A folder's files are read in sorted order of their relative paths (so the result
    is the same on every machine) and joined with a blank line. Raises
    FileNotFoundError for a missing path or a folder without text files, and
    ValueError for text that is empty or not UTF-8.
    """
    path = Path(path)
    if path.is_file():
        text = _read_utf8(path)
    elif path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise FileNotFoundError(f"folder {path} contains no {' or '.join(TEXT_SUFFIXES)} files")
        text = "\n".join(_read_utf8(p).rstrip("\n") + "\n" for p in files)
    else:
        raise FileNotFoundError(f"text path {path} does not exist")
    if not text.strip():
        raise ValueError(f"{path} contains no text (it is empty or only whitespace)")
    return text
