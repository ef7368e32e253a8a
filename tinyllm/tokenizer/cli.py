"""`tinyllm tokenizer train|encode`: the tokenizer's command line.

    tinyllm tokenizer train --data PATH --vocab-size N --out FILE
                            [--pattern gpt2|gpt4|none|REGEX] [--special-tokens TOKEN ...] [--workers N]
    tinyllm tokenizer encode --tokenizer FILE --data PATH --out DIR
                             [--prefix NAME] [--shard-tokens N] [--no-eot] [--workers N]

PATH is a file, a folder (its files, recursively) or a glob. `train --vocab-size`
counts special tokens; a vocabulary of 256 + 1 is the smallest with the default
"<|endoftext|>". `encode` writes token shards `DIR/NAME_000000.bin`, ... (prepare.py:
streaming, on --workers processes, resumable after an interruption) and prints their
paths; `tinyllm train --data DIR --tokenizer FILE` trains from them. Both spread the work
over --workers processes (0, the default: one per core).

Wiring it into the `tinyllm` console script takes two lines:

    from tinyllm.tokenizer import cli as tokenizer_cli
    tokenizer_cli.register(subparsers)   # adds `tokenizer` with `train` and `encode`

Each subcommand sets `args.handler`; call `args.handler(args)`. Bad input raises an
error with a one-line message naming the flag or file and the fix: a bad flag value (a
vocabulary under 256 or over 2**24, a regex that does not compile, special tokens given
twice, an --out that cannot be written) is a TokenizerCommandError; a file that is not
UTF-8 text a TextFileError; a malformed tokenizer file a TokenizerFileError; a missing file
a FileNotFoundError. `tinyllm` (tinyllm/cli.py) turns each into `tinyllm tokenizer: error:
...` and exit status 2, as `main` here does. Leaves out: everything about models and
training (tinyllm/cli.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from tinyllm.errors import UserError
from tinyllm.limits import MAX_VOCAB

from .base import EOT_TOKEN
from .bpe import BPETokenizer
from .files import load_tokenizer
from .patterns import resolve_pattern
from .prepare import encode_files_to_shards
from .shards import DEFAULT_SHARD_TOKENS, expand_data_paths, read_shard_header


class TokenizerCommandError(UserError):
    """A bad value of a `tinyllm tokenizer` flag; the message names the flag and the fix."""


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
    add_workers_flag(train, "processes counting the chunks")
    train.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error (also: TINYLLM_DEBUG=1)")
    train.set_defaults(handler=run_train)

    encode = commands.add_parser("encode", help="encode text files into token shards")
    encode.add_argument("--tokenizer", required=True, help="a tokenizer file (from `train`)")
    encode.add_argument("--data", required=True, help="a text file, a folder, or a glob")
    encode.add_argument("--out", required=True, help="the folder for the shard files")
    encode.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                        help=f"ids per shard (default: {DEFAULT_SHARD_TOKENS})")
    encode.add_argument("--no-eot", action="store_true",
                        help="do not append <|endoftext|> after each file")
    encode.add_argument("--prefix", default="shard",
                        help="shard file names: PREFIX_000000.bin, ... (default: shard; 'val' names a "
                             "validation set that `tinyllm train` holds out)")
    add_workers_flag(encode, "processes encoding")
    encode.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (also: TINYLLM_DEBUG=1)")
    encode.set_defaults(handler=run_encode)
    return parser


def add_workers_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help=f"{what} the text (0, the default: one per core; 1: this process alone)")


def check_workers(args: argparse.Namespace) -> None:
    if args.workers < 0:
        raise TokenizerCommandError(f"--workers {args.workers}: must be 0 (one per core) or a positive integer")


def check_train_flags(args: argparse.Namespace) -> None:
    """Every flag of `tokenizer train` checked before any file is read (TokenizerCommandError)."""
    if args.vocab_size < 256 + len(args.special_tokens):
        raise TokenizerCommandError(f"--vocab-size {args.vocab_size} is too small: a byte-level BPE needs "
                                    f"256 ids for the bytes plus {len(args.special_tokens)} for special "
                                    f"tokens; use at least {256 + len(args.special_tokens)}")
    if args.vocab_size > MAX_VOCAB:
        raise TokenizerCommandError(f"--vocab-size {args.vocab_size} is too large: ids must be below {MAX_VOCAB:,} "
                                    "(2**24); ask for fewer")
    repeated = sorted({t for t in args.special_tokens if args.special_tokens.count(t) > 1})
    if repeated:
        raise TokenizerCommandError(f"--special-tokens: {repeated[0]!r} is given twice; list each special token once")
    if any(not token for token in args.special_tokens):
        raise TokenizerCommandError("--special-tokens: an empty string is not a token; drop it")
    try:
        resolve_pattern(args.pattern)
    except ValueError as error:
        raise TokenizerCommandError(f"--pattern: {error}") from None
    check_output_path(args.out, "--out", directory=False)
    check_workers(args)


def check_output_path(path: str, flag: str, directory: bool) -> None:
    """`path` can be written as a file (or made a directory), or a TokenizerCommandError naming `flag`."""
    if os.path.exists(path) and os.path.isdir(path) != directory:
        raise TokenizerCommandError(f"{flag} {path}: is a {'file' if directory else 'directory'}; "
                                    f"give the path of a {'directory' if directory else 'file'} to write")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):   # the first folder that exists must be a writable directory
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise TokenizerCommandError(f"{flag} {path}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TokenizerCommandError(f"{flag} {path}: {parent} is not writable; choose a location you may write")


def run_train(args: argparse.Namespace) -> int:
    check_train_flags(args)
    files = expand_data_paths(args.data)
    started = time.perf_counter()
    tokenizer = BPETokenizer.train_from_files(files, args.vocab_size, pattern=args.pattern,
                                              special_tokens=args.special_tokens, workers=args.workers)
    seconds = time.perf_counter() - started
    tokenizer.save(args.out)
    print(f"trained {tokenizer.vocab_size} ids on {len(files)} file(s) in {seconds:.1f} s "
          f"-> {args.out} (hash {tokenizer.hash()[:16]})")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    if args.shard_tokens <= 0:
        raise TokenizerCommandError(f"--shard-tokens {args.shard_tokens} must be positive")
    if not args.prefix or not all(c.isalnum() or c in "-_" for c in args.prefix):
        raise TokenizerCommandError(f"--prefix {args.prefix!r}: use letters, digits, - and _ (e.g. train, val)")
    check_workers(args)
    check_output_path(args.out, "--out", directory=True)
    tokenizer = load_tokenizer(args.tokenizer)
    started = time.perf_counter()
    shards = encode_files_to_shards(tokenizer, args.data, args.out, shard_tokens=args.shard_tokens,
                                    append_eot=not args.no_eot, prefix=args.prefix, workers=args.workers,
                                    log=lambda line: print(line, file=sys.stderr, flush=True))
    tokens = sum(read_shard_header(path).num_tokens for path in shards)
    print(f"{tokens:,} tokens in {len(shards)} shard(s) in {time.perf_counter() - started:.1f} s; train on them "
          f"with: tinyllm train --data {args.out} --tokenizer {args.tokenizer}", file=sys.stderr)
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
