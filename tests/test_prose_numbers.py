"""No computed number is typed by hand into a chapter's prose.

A number in the prose must come from the code (myst-nb ``{glue:text}`` or a printed table),
so that text and outputs cannot drift apart when the code or the data changes. This test
finds the numbers that were typed instead.

The heuristic, per notebook:

- *Prose numbers* are read from the markdown cells after removing what is not prose: math
  (``$...$``, ``$$...$$``), inline code and code fences, MyST roles (``{glue:text}`...```,
  ``{cite}`...```), directive options (``:label: ...``), links' targets and arXiv ids. Of those,
  only numbers that look measured are kept: with a decimal point (``2.32``) or a percent sign
  (``89%``), and at least two significant digits. Integers (``12 heads``, ``300 steps``) are
  settings far more often than results, and are left alone.
  Two more are left alone: fractions of zeros (``1.0``, a clip norm far more often than a
  result) and, in chapter N, ``N.M`` with one digit after the point (exercise N.M).
- *Output numbers* are every number in the code cells' outputs (streams, plain text, HTML
  tables, markdown), except the source listings that the chapters print (a markdown output
  holding a ``python`` code fence): a constant in the code is not a result.
- A prose number is **hand-typed** when some output number, rounded to the prose number's
  decimals, equals it: ``2.3187`` printed and ``2.32`` typed. (Percentages are compared with
  the output number times 100 as well, as ``0.891`` printed and ``89%`` typed.)

It misses numbers that no output prints (a figure read off a plot) and may flag a setting that
happens to equal a rounded result; such a number goes into ALLOWED below, with the reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

# notebook stem -> {prose token: why it is not a computed result}
ALLOWED: dict[str, dict[str, str]] = {
    "04_gpt2": {"18%": "the paper's measured slowdown (150 -> 177 ms per step), quoted as the paper's",
                "1.5": "a sampling temperature, a setting"},
    "A1_performance": {"1.5": "the target ratio core / mirror that the project set itself",
                       "1.2": "the aim, a stricter target"},
    "11_capstone": {"40%": "the MFU the plan assumes before a GPU measures it (a setting of training/plan.py)"},
}

_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s?%)?(?![\w]|\.\d|,\d{3})")
_NOT_PROSE = [
    re.compile(r"```.*?```", re.S),             # code fences
    re.compile(r"\$\$.*?\$\$", re.S),           # display math
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S),
    re.compile(r"(?<!\\)\$[^$\n]+?(?<!\\)\$"),  # inline math
    re.compile(r"\{[\w:-]+\}`[^`]*`"),          # MyST roles: {glue:text}`x:.2f`, {cite}`key`
    re.compile(r"`[^`\n]*`"),                   # inline code
    re.compile(r"^\s*:[\w-]+:.*$", re.M),       # directive options
    re.compile(r"^\s*:::+.*$", re.M),           # directive headers: {exercise} 5.2: ...
    re.compile(r"\b(?:exercises?|sections?|chapters?|figures?|tables?|equations?|versions?|python|pytorch|"
               r"torch|numpy|cuda|ex)\s+\d+(?:\.\d+)+", re.I),  # "exercise 4.2", "Python 3.11": names
    re.compile(r"\]\([^)]*\)"),                 # link targets
    re.compile(r"https?://\S+"),
    re.compile(r"arXiv[:\s]+\d{4}\.\d{4,5}", re.I),
    re.compile(r"<!--.*?-->", re.S),
]
_TAG = re.compile(r"<[^>]+>")


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def prose_numbers(markdown: str, chapter: int | None = None) -> list[tuple[str, float, int, bool]]:
    """(token, value, decimals, is_percent) of the measured-looking numbers of some markdown.
    ``chapter``: the notebook's number, whose "N.M" with one digit after the point name
    exercises and sections ("3.2, 3.3 and 3.5"), not results."""
    for pattern in _NOT_PROSE:
        markdown = pattern.sub(" ", markdown)
    out = []
    for m in _NUMBER.finditer(markdown):
        whole, frac, pct = m.group(1), m.group(2) or "", bool(m.group(3))
        if not frac and not pct:
            continue  # an integer: a setting, a count, a year
        if frac and not pct and set(frac[1:]) == {"0"}:
            continue  # "1.0", "8.0": written so for settings (a clip norm, a threshold) far more than results
        if chapter is not None and not pct and whole == str(chapter) and len(frac) == 2:
            continue  # "3.2" in chapter 3: exercise 3.2
        digits = (whole.replace(",", "") + frac[1:]).lstrip("0")
        if len(digits) < 2:
            continue  # "0.5", "2%": too coarse to tell a result from a setting
        out.append((m.group(0).strip(), float(whole.replace(",", "") + frac), len(frac) - 1 if frac else 0, pct))
    return out


def output_numbers(cell: dict) -> list[float]:
    """Every number printed by a code cell (not the source listings it displays)."""
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            texts.append(_text(out["text"]))
        for mime, value in out.get("data", {}).items():
            value = _text(value)
            if mime == "text/markdown" and "```python" in value:
                continue  # printed library source: its constants are not results
            if mime in ("text/plain", "text/markdown"):
                texts.append(value)
            elif mime == "text/html":
                texts.append(_TAG.sub(" ", value))
    found = []
    for text in texts:
        for m in re.finditer(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?", text):
            try:
                found.append(abs(float(m.group(0).replace(",", ""))))
            except ValueError:
                pass
    return found


def hand_typed(nb: dict, chapter: int | None = None) -> list[tuple[int, str, float]]:
    """(markdown cell index, prose token, the output number it matches) for every hand-typed number."""
    outputs = sorted({x for c in nb["cells"] if c["cell_type"] == "code" for x in output_numbers(c)})
    hits = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for token, value, decimals, pct in prose_numbers(_text(cell["source"]), chapter):
            for x in outputs:
                candidates = (x, 100 * x) if pct else (x,)
                if any(_rounds_to(c, value, decimals) for c in candidates):
                    hits.append((i, token, x))
                    break
    return hits


def _rounds_to(x: float, value: float, decimals: int) -> bool:
    if x == 0:
        return False
    # the output must carry at least the prose's precision: 2.3 printed does not make 2.30 typed
    return round(x, decimals) == value and (decimals > 0 or x != int(x) or value >= 100)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_hand_typed_numbers(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    allowed = ALLOWED.get(path.stem, {})
    chapter = int(path.stem[:2]) if path.stem[:2].isdigit() else None
    hits = [(i, tok, x) for i, tok, x in hand_typed(nb, chapter) if tok not in allowed]
    assert not hits, (
        f"{path.name}: numbers typed into the prose that the notebook's outputs compute "
        "(glue them with myst_nb.glue and {glue:text}`name:.2f`, or print them in a table; "
        "a setting that only looks like a result goes into ALLOWED in this file, with the reason):\n"
        + "\n".join(f"  markdown cell {i}: {tok!r} (an output prints {x:g})" for i, tok, x in hits))


# ----------------------------------------------------------------- the heuristic itself

def _nb(markdown: str, output: str) -> dict:
    return {"cells": [
        {"cell_type": "code", "source": "", "outputs": [{"output_type": "stream", "name": "stdout", "text": output}]},
        {"cell_type": "markdown", "source": markdown},
    ]}


def test_heuristic_flags_a_typed_result():
    hits = hand_typed(_nb("GPT-2 reaches a val loss of 2.32 nats per character.", "val loss 2.3187\n"))
    assert [(tok, x) for _, tok, x in hits] == [("2.32", 2.3187)]


def test_heuristic_flags_percentages_and_thousands():
    nb = _nb("It keeps 89% of the mass, and 38.6 million parameters.", "fraction 0.8912\nparams 38.61\n")
    assert sorted(tok for _, tok, _ in hand_typed(nb)) == ["38.6", "89%"]


def test_heuristic_spares_glue_math_code_settings_and_citations():
    markdown = ("A loss of {glue:text}`loss:.2f` at $\\beta = 2.32$, `lr = 2.32`, 12 heads, 300 steps, "
                "dt = 0.5, torch 2.13.0, arXiv 2409.14199, see [the post](https://x.org/2.32), exercise 2.3, "
                "Python 3.11.\n"
                ":::{exercise} 2.3\n:label: ex-2.32\n:::")
    assert hand_typed(_nb(markdown, "loss 2.3187 0.4999 2409.14199 2.13 3.11\n")) == []


def test_heuristic_ignores_printed_source():
    nb = _nb("The constant 0.044715 of GELU.", "")
    nb["cells"][0]["outputs"] = [{"output_type": "display_data",
                                  "data": {"text/markdown": "```python\nc = 0.044715\n```"}}]
    assert hand_typed(nb) == []
    nb["cells"][0]["outputs"].append({"output_type": "stream", "name": "stdout", "text": "c 0.044715"})
    assert len(hand_typed(nb)) == 1


def test_heuristic_spares_exercise_numbers_of_its_chapter_only():
    nb = _nb("Exercises 3.1 and 3.2 ask for it; the loss is 3.2 in chapter 4's sense.", "loss 3.21\n")
    assert hand_typed(nb, chapter=3) == []
    assert [tok for _, tok, _ in hand_typed(nb, chapter=4)] == ["3.2", "3.2"]
