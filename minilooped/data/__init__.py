"""The data layer: from raw text to batches of token ids.

text --(corpora)--> str --(tokenizers)--> ids --(prepare / owt)--> train.bin, val.bin
     --(batches)--> (x, y) int64 arrays of shape (B, T)

NumPy and the standard library only (plus tiktoken, and Hugging Face ``datasets`` for
OpenWebText, imported only when used). The data layer never imports the models or
the tensor engine: the same batches feed the NumPy core and the PyTorch mirror.
"""
from .batches import TokenDataset, check_token_ids, get_batch
from .corpora import (
    clean_play_markdown,
    load_text,
    shakespeare_split,
    shakespeare_text,
    split_text,
)
from .owt import prepare_openwebtext
from .prepare import (
    load_prepared_tokenizer,
    prepare_local_text,
    prepare_shakespeare,
    prepare_text,
    read_meta,
    token_dtype,
    write_tokens,
)
from .tokenizers import (
    BPETokenizer,
    CharTokenizer,
    get_gpt2_tokenizer,
    get_stats,
    get_tokenizer,
    merge,
)


__all__ = [
    "BPETokenizer", "CharTokenizer", "TokenDataset", "check_token_ids", "clean_play_markdown",
    "get_batch", "get_gpt2_tokenizer", "get_stats", "get_tokenizer", "load_prepared_tokenizer",
    "load_text", "merge", "prepare_local_text", "prepare_openwebtext", "prepare_shakespeare",
    "prepare_text", "read_meta", "shakespeare_split", "shakespeare_text", "split_text",
    "token_dtype", "write_tokens",
]
