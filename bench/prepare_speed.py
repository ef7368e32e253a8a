"""Preparing a large corpus: `tinyllm tokenizer encode` and `tinyllm train`'s own preparation,
side by side with tiktoken on all cores, as nanoGPT's and llm.c's preparation scripts run it.

    python3 bench/prepare_speed.py [--sizes 300 600] [--workers 0] [--dir /tmp/tinyllm-prepare]
                                   [--vocab-size 4096] [--keep]

For each size (MB) it generates a corpus under --dir (Shakespeare's words drawn Zipf-like,
with numbered words and non-ASCII words and apostrophes, documents separated by a blank
line; tinyshakespeare's words when the shared data folder beside the repository has it,
else the pydoc topics' words), trains a 4096-id tokenizer on a 20 MB sample once, then runs, each
in its own process tree, one after the other:

- tiktoken: tiktoken built from our ranks and pattern, on --workers processes
  (multiprocessing.Pool.imap over the documents, chunksize 16, ids appended to a uint16
  file: llm.c's fineweb.py, nanoGPT's prepare.py);
- `tinyllm tokenizer encode --no-eot` on --workers processes;
- `tinyllm train --data CORPUS --tokenizer FILE --max-iters 1` (its preparation, then one
  step: the preparation's own seconds are read from its log line);
- `tinyllm train --tokenizer bpe` (BPE training on the corpus, then the preparation).

It reports wall time, MB of text per second (from the preparation's own seconds where the
run logs them), CPU seconds of the process tree, and the peak memory of each tree (sampled
every 50 ms from /proc: the sum of the processes' RSS, which counts pages that forked
workers share once per process, so it overstates; and the sum of their PSS, which shares
them out); with --repeats N each runs N times in turns and its fastest run is reported. It
checks that our shards hold exactly tiktoken's ids, and deletes what it wrote (--keep
keeps the corpora). Needs Linux (/proc) and tiktoken (pip install tiktoken: the
benchmark's, never the package's dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = [os.path.join(REPO_ROOT, *up, "shared", "data", "tinyshakespeare.txt") for up in ([".."], ["..", ".."])]
NON_ASCII = ["café", "naïve", "Straße", "façade", "déjà", "über", "Ægir", "smörgåsbord", "東京", "こんにちは",
             "Москва", "Αθήνα", "😀", "—", "’tis", "o’er", "e’en", "ne’er"]


def corpus_words() -> list:
    """Words by frequency, most frequent first."""
    path = next((p for p in SHAKESPEARE if os.path.isfile(p)), None)
    if path is None:
        from pydoc_data.topics import topics
        text = "\n".join(topics.values())
    else:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    counts: dict = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=counts.get, reverse=True)


def generate_corpus(path: str, megabytes: int, seed: int = 0) -> None:
    """Zipf-drawn words, 5% numbered words, 3% non-ASCII words; lines of 12 words; documents of
    10-60 lines separated by a blank line. Written a block at a time (bounded memory)."""
    rng = np.random.default_rng(seed)
    words = np.array(corpus_words(), dtype=object)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    weights /= weights.sum()
    target = megabytes * 1_000_000
    written = 0
    with open(path, "w", encoding="utf-8") as file:
        while written < target:
            n = 200_000
            block = words[rng.choice(len(words), size=n, p=weights)]
            numbered = rng.random(n) < 0.05
            block[numbered] = [f"item{k}" for k in rng.integers(0, 100_000, size=int(numbered.sum()))]
            foreign = rng.random(n) < 0.03
            block[foreign] = rng.choice(NON_ASCII, size=int(foreign.sum()))
            lines = [" ".join(block[i:i + 12]) for i in range(0, n, 12)]
            documents, i = [], 0
            while i < len(lines):
                size = int(rng.integers(10, 60))
                documents.append("Doc " + "\n".join(lines[i:i + size]) + "\n\n")  # starts with a letter
                i += size
            chunk = "".join(documents)
            file.write(chunk)
            written += len(chunk.encode("utf-8"))


def tree_memory(root: int) -> tuple:
    """(sum of RSS, sum of PSS) in bytes over `root` and its descendants."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    parent = int(file.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as file:
                for line in file:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def measure(command: list, env=None) -> dict:
    """Run `command`, sampling its process tree's memory: wall seconds, CPU seconds of the tree
    (user + system, its waited-for workers included), peak RSS and PSS, output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        peak_rss = peak_pss = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            rss, pss = tree_memory(process.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{text[-3000:]}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "rss": peak_rss, "pss": peak_pss,
            "output": text}


TIKTOKEN = "tiktoken, Pool.imap (llm.c, nanoGPT)"
TIKTOKEN_SCRIPT = r'''
import multiprocessing as mp, sys
import numpy as np, tiktoken
sys.path.insert(0, sys.argv[4])
from tinyllm.tokenizer import load_tokenizer

def documents(path):
    """The documents of the corpus, each with its blank line (a cut where GPT-4 always cuts)."""
    lines = []
    with open(path, encoding="utf-8", newline="") as file:
        for line in file:
            lines.append(line)
            if line == "\n":
                yield "".join(lines)
                lines = []
    if lines:
        yield "".join(lines)

def init(path):
    global encoding
    tok = load_tokenizer(path)
    encoding = tiktoken.Encoding(name="bench", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks,
                                 special_tokens=tok.special_tokens)

def tokenize(document):
    return np.array(encoding.encode_ordinary(document), dtype=np.uint16)

if __name__ == "__main__":
    corpus, tokenizer, out, _, workers = sys.argv[1:6]
    with mp.Pool(int(workers), initializer=init, initargs=(tokenizer,)) as pool, open(out, "wb") as file:
        for ids in pool.imap(tokenize, documents(corpus), chunksize=16):
            file.write(ids.tobytes())
'''


def same_ids(shard_paths: list, reference: str) -> bool:
    """Our shards' ids equal the reference uint16 file, compared a block at a time."""
    sys.path.insert(0, REPO_ROOT)
    from tinyllm.tokenizer import read_shard
    expected = np.memmap(reference, dtype=np.uint16, mode="r")
    position = 0
    for path in shard_paths:
        ids = read_shard(path)
        for start in range(0, len(ids), 1 << 24):
            block = np.asarray(ids[start:start + (1 << 24)])
            if not np.array_equal(block, expected[position:position + len(block)]):
                return False
            position += len(block)
    return position == len(expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 600], help="corpus sizes in MB")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tinyllm-prepare-bench"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, in turns; the fastest is reported")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpora")
    args = parser.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    tinyllm = [sys.executable, "-m", "tinyllm.cli"]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    os.makedirs(args.dir, exist_ok=False)
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   "unknown CPU")
        print(f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable, {workers} worker processes; "
              f"python {sys.version.split()[0]}", flush=True)
        sample = os.path.join(args.dir, "sample.txt")
        generate_corpus(sample, 20, seed=1)
        tokenizer = os.path.join(args.dir, "tok.txt")
        subprocess.run(tinyllm + ["tokenizer", "train", "--data", sample, "--vocab-size", str(args.vocab_size),
                                  "--out", tokenizer], check=True, env=env, capture_output=True)
        tiktoken_script = os.path.join(args.dir, "tiktoken_prepare.py")
        with open(tiktoken_script, "w") as file:
            file.write(TIKTOKEN_SCRIPT)
        rows = []
        for size in args.sizes:
            corpus = os.path.join(args.dir, f"corpus_{size}.txt")
            generate_corpus(corpus, size)
            megabytes = os.path.getsize(corpus) / 1e6
            reference = os.path.join(args.dir, f"tiktoken_{size}.bin")
            shards_dir = os.path.join(args.dir, f"shards_{size}")
            train = ["train", "--data", corpus, "--max-iters", "1", "--eval-iters", "1", "--eval-interval", "1",
                     "--batch-size", "2", "--sample-tokens", "0", "--progress", "log", "--workers", str(workers)]
            commands = {
                TIKTOKEN: [sys.executable, tiktoken_script, corpus, tokenizer, reference, REPO_ROOT, str(workers)],
                "tinyllm tokenizer encode": tinyllm + ["tokenizer", "encode", "--tokenizer", tokenizer, "--data", corpus,
                                                       "--no-eot", "--out", shards_dir, "--workers", str(workers)],
                "tinyllm train (its preparation)": tinyllm + train + ["--tokenizer", tokenizer],
                "tinyllm train --tokenizer bpe": tinyllm + train + ["--tokenizer", "bpe", "--vocab-size",
                                                                    str(args.vocab_size)],
            }
            best: dict = {}
            for _ in range(args.repeats):  # all four in turns; the fastest run of each is kept
                for name, command in commands.items():
                    run_dir = os.path.join(args.dir, "run")
                    # a finished preparation would be reused, not timed
                    shutil.rmtree(shards_dir if name.endswith("encode") else run_dir, ignore_errors=True)
                    run = measure(command + (["--out", run_dir] if name.startswith("tinyllm train") else []), env)
                    prepared = re.search(r"wrote [\d,]+ train and [\d,]+ val tokens .* in ([\d.]+) s", run["output"])
                    run["preparation"] = float(prepared.group(1)) if prepared else run["seconds"]
                    if name not in best or run["preparation"] < best[name]["preparation"]:
                        best[name] = run
            shards = sorted(os.path.join(shards_dir, name) for name in os.listdir(shards_dir) if name.endswith(".bin"))
            identical = same_ids(shards, reference)
            print(f"{size} MB: our shards hold exactly tiktoken's ids: {identical}", flush=True)
            if not identical:
                sys.exit("ids differ from tiktoken's")
            base = best[TIKTOKEN]["preparation"]
            for name, run in best.items():
                rows.append((size, name, run["seconds"], run["preparation"], megabytes / run["preparation"],
                             base / run["preparation"], run["cpu"], run["rss"] / 2**20, run["pss"] / 2**20))
            for path in (shards_dir, os.path.join(args.dir, "run"), reference) + (() if args.keep else (corpus,)):
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
        print("\n| corpus | run | wall s | preparation s | MB/s | vs tiktoken | CPU s | peak RSS MiB (sum) "
              "| peak PSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for size, name, wall, seconds, rate, ratio, cpu_seconds, rss, pss in rows:
            print(f"| {size} MB | {name} | {wall:.1f} | {seconds:.1f} | {rate:.1f} | {ratio:.2f}x | {cpu_seconds:.1f} | "
                  f"{rss:,.0f} | {pss:,.0f} |")
        print(json.dumps({"rows": rows}))
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
