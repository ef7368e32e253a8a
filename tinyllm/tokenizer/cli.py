"""`tinyllm tokenizer train|encode`: the tokenizer's command line.

    tinyllm tokenizer train --data PATH --vocab-size N --out FILE
                            [--pattern gpt2|gpt4|none|REGEX] [--special-tokens TOKEN ...]
    tinyllm tokenizer encode --tokenizer FILE --data PATH --out DIR
                             [--shard-tokens N] [--no-eot]

PATH is a file, a folder (its files, recursively) or a glob. `train --vocab-size`
counts special tokens; a vocabulary of 256 + 1 is the smallest with the default
"<|endoftext|>". `encode` writes token shards (shards.py) and prints their paths.

Wiring it into the `tinyllm` console script takes two lines:

    from tinyllm.tokenizer import cli as tokenizer_cli
    tokenizer_cli.register(subparsers)   # adds `tokenizer` with `train` and `encode`

Each subcommand sets `args.handler`; call `args.handler(args)`. Bad input (a missing
file, a vocabulary under 256, a malformed tokenizer file) raises ValueError or
FileNotFoundError with a one-line message naming the value; `main` turns it into
`tinyllm tokenizer: error: ...` and exit status 2. Leaves out: everything about
models and training (tinyllm/cli.py).
"""

from __future__ import annotations

import argparse
import sys
import time

from .base import EOT_TOKEN
from .bpe import BPETokenizer
from .files import load_tokenizer
from .shards import DEFAULT_SHARD_TOKENS, encode_files_to_shards, expand_data_paths


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `tokenizer` command (with `train` and `encode`) to an argparse
    subparsers object; returns the `tokenizer` parser."""
    parser = subparsers.add_parser("tokenizer", help="train a BPE tokenizer or encode a corpus",
                                   description="Train a byte-level BPE tokenizer, or encode "
                                               "text files into token shards.")
    commands = parser.add_subparsers(dest="tokenizer_command", metavar="train|encode")
    commands.required = True

    train = commands.add_parser("train", help="learn a BPE vocabulary from text files")
    train.add_argument("--data", required=True, help="a text file, a folder, or a glob")
    train.add_argument("--vocab-size", type=int, required=True,
                       help="ids in all, special tokens included (at least 256 + their number)")
    train.add_argument("--out", required=True, help="the tokenizer file to write")
    train.add_argument("--pattern", default="gpt4",
                       help="split pattern: gpt2, gpt4, none, or a regex (default: gpt4)")
    train.add_argument("--special-tokens", nargs="*", default=[EOT_TOKEN], metavar="TOKEN",
                       help=f"special tokens, given ids after the merges (default: {EOT_TOKEN}; "
                            "pass the flag alone for none)")
    train.set_defaults(handler=run_train)

    encode = commands.add_parser("encode", help="encode text files into token shards")
    encode.add_argument("--tokenizer", required=True, help="a tokenizer file (from `train`)")
    encode.add_argument("--data", required=True, help="a text file, a folder, or a glob")
    encode.add_argument("--out", required=True, help="the folder for the shard files")
    encode.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                        help=f"ids per shard (default: {DEFAULT_SHARD_TOKENS})")
    encode.add_argument("--no-eot", action="store_true",
                        help="do not append <|endoftext|> after each file")
    encode.set_defaults(handler=run_encode)
    return parser


def run_train(args: argparse.Namespace) -> int:
    if args.vocab_size < 256 + len(args.special_tokens):
        raise ValueError(f"--vocab-size {args.vocab_size} is too small: a byte-level BPE needs "
                         f"256 ids for the bytes plus {len(args.special_tokens)} for special "
                         f"tokens; use at least {256 + len(args.special_tokens)}")
    files = expand_data_paths(args.data)
    started = time.perf_counter()
    tokenizer = BPETokenizer.train_from_files(files, args.vocab_size, pattern=args.pattern,
                                              special_tokens=args.special_tokens)
    seconds = time.perf_counter() - started
    tokenizer.save(args.out)
    print(f"trained {tokenizer.vocab_size} ids on {len(files)} file(s) in {seconds:.1f} s "
          f"-> {args.out} (hash {tokenizer.hash()[:16]})")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    if args.shard_tokens <= 0:
        raise ValueError(f"--shard-tokens {args.shard_tokens} must be positive")
    tokenizer = load_tokenizer(args.tokenizer)
    shards = encode_files_to_shards(tokenizer, args.data, args.out,
                                    shard_tokens=args.shard_tokens, append_eot=not args.no_eot)
    for path in shards:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `tokenizer ...` on its own: `python -m tinyllm.tokenizer.cli train ...`."""
    parser = argparse.ArgumentParser(prog="tinyllm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tokenizer", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"tinyllm tokenizer: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
