"""Cutting one text into a training part and a validation part."""
from __future__ import annotations


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Return ``(train, val)`` with the last ``val_fraction`` of ``text`` as validation.

    The cut is moved forward to the start of the next line, so no word (and no token)
    is cut in half: tokenizing train and val separately then gives the same tokens as
    tokenizing the whole text, up to the single boundary. ``train + val == text`` always.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut)
    cut = len(text) if newline == -1 else newline + 1
    train, val = text[:cut], text[cut:]
    if not train or not val:
        raise ValueError(
            f"cannot split a text of {len(text)} characters with val_fraction={val_fraction}: "
            f"one side would be empty (the split happens at a line start; does the text have enough lines?)"
        )
    return train, val
