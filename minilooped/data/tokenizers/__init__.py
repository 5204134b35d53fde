"""Tokenizers: text <-> integer ids.

* :mod:`.char`: one id per character (tiny vocabulary, long sequences).
* :mod:`.bpe`: byte-level BPE written from scratch (train your own, or load GPT-2's).
* :mod:`.gpt2`: GPT-2's exact tokenizer through tiktoken, built from local files.
"""
from .bpe import BPETokenizer, get_stats, merge
from .char import CharTokenizer
from .factory import TOKENIZER_NAMES, get_tokenizer
from .gpt2 import build_gpt2_encoding, get_gpt2_tokenizer
from .gpt2_files import EOT_TOKEN, GPT2_SPLIT_PATTERN, GPT2FileError, bytes_to_unicode, gpt2_file_paths

__all__ = [
    "BPETokenizer", "CharTokenizer", "EOT_TOKEN", "GPT2_SPLIT_PATTERN", "GPT2FileError",
    "TOKENIZER_NAMES", "build_gpt2_encoding", "bytes_to_unicode", "get_gpt2_tokenizer",
    "get_stats", "get_tokenizer", "gpt2_file_paths", "merge",
]
