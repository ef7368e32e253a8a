"""Tokenizer speed: BPE training time, and encoding throughput against tiktoken.

    python3 bench/tokenizer_speed.py [TEXT_FILE] [--vocab-size 4096] [--pattern gpt4]
                                     [--repeats 5] [--no-non-ascii]

Trains a vocabulary on the file (default: tinyshakespeare.txt in the shared data folder
beside the repository), then encodes the whole file with our tokenizer and with
tiktoken built from our `mergeable_ranks` and `pattern`, side by side in this process
on one thread, asserts identical ids and prints MB/s and the ratio. Two numbers for
us: "cold" is a fresh tokenizer with an empty chunk cache (every distinct chunk is
merged), "warm" repeats the encoding with the cache filled. Each is the best of
`--repeats` runs, taken in turns (tiktoken, cold, warm, tiktoken, ...) so that a
busy spell on a shared machine hits all three alike. An ASCII text is run a second
time with its apostrophes written as U+2019: non-ASCII text takes the tokenizer's
other path (cached pieces instead of the ASCII split). tiktoken is imported here only;
the package never needs it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from tinyllm.tokenizer import BPETokenizer  # noqa: E402

DEFAULT_TEXT = next((path for path in (os.path.join(REPO_ROOT, *up, "shared", "data", "tinyshakespeare.txt")
                                       for up in ([".."], ["..", ".."])) if os.path.isfile(path)),
                    "tinyshakespeare.txt")


def best_seconds_in_turns(runs: dict, repeats: int) -> tuple:
    """(name -> best CPU seconds, name -> best wall seconds) of `repeats` calls of runs[name],
    the calls taken in turns."""
    cpu = dict.fromkeys(runs, float("inf"))
    wall = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            cpu[name] = min(cpu[name], time.process_time() - started_cpu)
            wall[name] = min(wall[name], time.perf_counter() - started)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text_file", nargs="?", default=DEFAULT_TEXT)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--pattern", default="gpt4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-non-ascii", dest="non_ascii", action="store_false",
                        help="skip the second run on a non-ASCII copy of an ASCII text")
    args = parser.parse_args()
    if not os.path.isfile(args.text_file):
        sys.exit(f"text file not found: {args.text_file!r}")
    with open(args.text_file, encoding="utf-8", newline="") as file:
        text = file.read()
    megabytes = len(text.encode("utf-8")) / 1e6
    print(f"text: {args.text_file} ({megabytes:.2f} MB), pattern {args.pattern}, "
          f"vocab {args.vocab_size}, python {sys.version.split()[0]}")

    started = time.perf_counter()
    tokenizer = BPETokenizer.train(text, vocab_size=args.vocab_size, pattern=args.pattern,
                                   special_tokens=["<|endoftext|>"], progress=False)
    train_seconds = time.perf_counter() - started
    print(f"train: {train_seconds:.2f} s for {tokenizer.vocab_size} ids (goal: < 10 s)")

    try:
        import tiktoken
    except ImportError:
        print("tiktoken is not installed: no comparison (pip install tiktoken in the "
              "benchmark's environment)")
        return
    reference = tiktoken.Encoding(name="tinyllm-bench", pat_str=tokenizer.pattern,
                                  mergeable_ranks=tokenizer.mergeable_ranks,
                                  special_tokens=tokenizer.special_tokens)
    compare_encoding(text, tokenizer, reference, args.repeats)
    if text.isascii() and args.non_ascii:
        # curly apostrophes make the text non-ASCII: the piece path instead of the ASCII split
        print("the same text with ' written as \u2019 (non-ASCII):")
        compare_encoding(text.replace("'", "\u2019"), tokenizer, reference, args.repeats)


def compare_encoding(text: str, tokenizer, reference, repeats: int) -> None:
    """Encode `text` with tiktoken, a fresh copy of `tokenizer` and `tokenizer` itself
    (its cache filled by a first pass); check the ids and print the speeds."""
    megabytes = len(text.encode("utf-8")) / 1e6
    reference_ids = reference.encode_ordinary(text)

    def encode_cold():
        fresh = BPETokenizer(tokenizer.mergeable_ranks, tokenizer.pattern,
                             tokenizer.special_tokens)
        return fresh.encode_ordinary(text)

    our_ids = encode_cold()
    assert our_ids == reference_ids, "ids differ from tiktoken's"
    assert tokenizer.encode_ordinary(text) == reference_ids
    cpu, wall = best_seconds_in_turns({
        "tiktoken": lambda: reference.encode_ordinary(text),
        "ours cold": encode_cold,
        "ours warm": lambda: tokenizer.encode_ordinary(text),
    }, repeats)
    print(f"encode: {len(our_ids)} ids, identical to tiktoken's (CPU seconds; wall seconds after the bar)")
    for name, value in cpu.items():
        print(f"  {name:10s} {value:6.3f} s  {megabytes / value:6.2f} MB/s  {cpu['tiktoken'] / value:4.2f}x tiktoken"
              f"  | wall {wall[name]:6.3f} s  {wall['tiktoken'] / wall[name]:4.2f}x")

if __name__ == "__main__":
    main()
