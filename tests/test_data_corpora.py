"""Corpora: Shakespeare's Markdown cleaned to plain text, splits, local text files."""
import re

import pytest

from minilooped.data.corpora import (
    clean_play_markdown,
    load_text,
    shakespeare_play_paths,
    shakespeare_split,
    shakespeare_text,
    split_text,
)

MARKDOWN = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**  
Who's there?

**ROSENCRANTZ: & GUILDENSTERN:**  
We'll wait upon you.

**LYSANDER**  
__\\[Awaking]_  
And run through fire I will for thy sweet sake.
defect,--'Ladies,'\\--or 'Fair-ladies

*Enter King Edward, Derby, and 
Artois.*



**DEMETRIUS**  
No, no; he'll __\\[ ]_  
[Within]_  
"""

CLEAN = """Hamlet

ACT I

SCENE I. Elsinore. A platform before the castle.

FRANCISCO at his post. Enter to him BERNARDO

BERNARDO:
Who's there?

ROSENCRANTZ & GUILDENSTERN:
We'll wait upon you.

LYSANDER:
[Awaking]
And run through fire I will for thy sweet sake.
defect,--'Ladies,'--or 'Fair-ladies

Enter King Edward, Derby, and
Artois.

DEMETRIUS:
No, no; he'll
[Within]
"""


def test_clean_play_markdown():
    assert clean_play_markdown(MARKDOWN) == CLEAN


def test_shakespeare_text_has_no_markdown():
    text = shakespeare_text()
    assert len(shakespeare_play_paths()) == 38
    assert 4_900_000 < len(text) < 5_100_000
    for mark in "#*_\\":
        assert mark not in text, f"markup {mark!r} left in the corpus"
    assert not re.search(r"[ \t]$", text, re.M)  # no Markdown hard-break spaces
    assert "\n\n\n" not in text
    assert text.startswith("A Midsummer Night's Dream\n\nACT I\n")  # comedies/ sorts first
    assert "\nHAMLET:\nTo be, or not to be: that is the question:\n" in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_shakespeare_order_and_split_are_deterministic():
    paths = shakespeare_play_paths()
    assert [p.parent.name + "/" + p.name for p in paths] == sorted(p.parent.name + "/" + p.name for p in paths)
    train, val = shakespeare_split()
    assert train + val == shakespeare_text()
    assert train.endswith("\n")  # cut at a line start
    assert 0.099 < len(val) / len(shakespeare_text()) < 0.101
    assert shakespeare_split() == (train, val)
    assert len(shakespeare_split(0.2)[1]) > len(val)


def test_split_text():
    text = "".join(f"line {i}\n" for i in range(100))
    train, val = split_text(text, 0.1)
    assert train + val == text and val.startswith("line ") and len(val) <= 0.1 * len(text)
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        split_text(text, 1.5)
    with pytest.raises(ValueError, match="one side would be empty"):
        split_text("a single line without a newline", 0.1)


def test_load_text(tmp_path):
    (tmp_path / "a.txt").write_text("first\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second", encoding="utf-8")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert load_text(tmp_path / "a.txt") == "first\n"
    assert load_text(tmp_path) == "first\n\nsecond\n"  # files joined by a blank line


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="contains no .txt or .md files"):
        load_text(tmp_path / "empty")
    (tmp_path / "blank.txt").write_text("  \n\n")
    with pytest.raises(ValueError, match="contains no text"):
        load_text(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        load_text(tmp_path / "latin1.txt")
