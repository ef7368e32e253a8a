"""Training data: corpora -> token shards (streaming, every core, memory-mapped) -> seeded batches.

    corpus = resolve_corpus("texts/", extensions=(".txt", ".md"))     # or None: built-in
    dataset = prepare_dataset(corpus, "char", out_dir="runs/demo")    # tokenize once, cached
    sampler = BatchSampler(dataset.train, block_size=64, batch_size=12, seed=1337)
    x, y = sampler.next_batch()                                        # (B, T) int64 each

Corpora (`--data`):
- nothing: the built-in corpus every Python install has, the English help text of the
  standard library's `pydoc_data.topics` (about 466 KB), so training needs no download;
- `stdlib`: the built-in text plus the standard library's own `.py` sources (about
  11 MB of code, tests excluded);
- a file, a directory (searched recursively, filtered by extension) or a glob, of text;
- token shards written by `tinyllm tokenizer encode` (a folder, a glob or one file,
  recognised by their header), trained from as they are, without tokenizing again; the
  tokenizer that wrote them is given with `--tokenizer FILE` and checked against their
  header. A folder holding both text and shards is refused.

Text is tokenized once, streaming and on `workers` processes (tokenizer/prepare.py): the
documents, joined by a blank line, become shards under `<out>/data/<key>/`, where the key
hashes the corpus files (paths, sizes, modification times) and the tokenizer choice. A
later run with the same corpus and tokenizer reads the shards back (memory-mapped); a
changed corpus or tokenizer builds a fresh cache. An interrupted preparation leaves its
finished shards in `<out>/data/<key>.partial/`, and the next run goes on from them.
Peak memory does not grow with the corpus (a `--tokenizer bpe` trained on the corpus
holds its distinct chunks).

The split is deterministic: the last `val_fraction` of the tokens is validation, as in
nanoGPT, for text and for shards alike; or, when a shard folder holds shards named as a
validation set (`val_000000.bin`, `fineweb_val_000000.bin`: `val` at the start of the
name or after `_`, `-` or `.`; `tinyllm tokenizer encode --prefix val` writes them, as
llm.c's `val_*.bin`), those are validation and the others train. Batches are random
windows of `block_size + 1` tokens, `x = w[:-1]`, `y = w[1:]`, drawn by a seeded NumPy
Generator whose state the checkpoint keeps; a window may span two shards
(tokenizer/shards.py, `ConcatenatedTokens`).

`download("tinyshakespeare")` fetches the classic char-rnn corpus over HTTP(S).

Left out: document boundaries inside a window (documents are joined with a blank line, or
by "<|endoftext|>" in shards from `tinyllm tokenizer encode`), sharding across processes (a
data-parallel rank draws the same batches and takes its own rows).
"""
from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyllm import io
from tinyllm.errors import UserError
from tinyllm.fields import check, is_number, is_positive_int, setting
from tinyllm.limits import MAX_METADATA_BYTES, check_file_size

BUILTIN = "builtin"
STDLIB = "stdlib"
DEFAULT_EXTENSIONS = (".txt", ".md", ".rst", ".py")
DOCUMENT_SEPARATOR = "\n\n"
CACHE_FORMAT = 2  # bump when the cache layout or the way text is joined changes
SHARD_TOKENS = 10_000_000  # ids per shard of the cache (20 MB as uint16): what an interruption can cost
SHARD_MAGIC = b"TLLMTOKS"  # the first bytes of a token shard (tokenizer/shards.py)
VALIDATION_NAME = re.compile(r"(^|[_.-])val", re.IGNORECASE)  # val_000000.bin, fineweb_val_000000.bin


class DataError(UserError):
    """A corpus or dataset problem the user can fix (message names the path and the fix)."""


@dataclass(frozen=True)
class DataSettings:
    """What a pretraining run reads: the corpus, the tokenizer and the validation split (`--data` ...)."""

    data: str | None = setting(None, "a text file, a directory, a glob, 'stdlib', or token shards from `tinyllm "
                                     "tokenizer encode` (default: the built-in pydoc topics corpus)")
    data_ext: str = setting(",".join(DEFAULT_EXTENSIONS), "extensions read from a --data directory, comma-separated")
    tokenizer: str = setting("char", "'char', 'bpe' (trained on the corpus) or a tokenizer file")
    vocab_size: int = setting(512, "BPE vocabulary size (with --tokenizer bpe)")
    val_fraction: float = setting(0.1, "the last fraction of the tokens held out for validation")

    def __post_init__(self):
        check(self, "data", lambda v: v is None or isinstance(v, str) and v != "",
              "must be a text file, a directory, a glob or 'stdlib'")
        check(self, "data_ext", lambda v: isinstance(v, str), "must be extensions, comma-separated (e.g. .txt,.md)")
        check(self, "tokenizer", lambda v: isinstance(v, str) and v != "", "must be char, bpe or a tokenizer file")
        check(self, "vocab_size", is_positive_int, "must be a positive integer")
        check(self, "val_fraction", lambda v: is_number(v) and 0 < v < 1, "must be between 0 and 1 (e.g. 0.1)")
        for name, value in absolute_paths({name: getattr(self, name) for name in PATH_SETTINGS}).items():
            object.__setattr__(self, name, value)   # stored as used: the run works from any directory


# the data settings that name files, with their values that are not paths
PATH_SETTINGS = {"data": (STDLIB,), "tokenizer": ("char", "bpe")}


def absolute_paths(settings: dict) -> dict:
    """`settings` (by flat name) with the data paths made absolute, as DataSettings stores them."""
    return io.absolute_paths(settings, PATH_SETTINGS)


# ---- corpora ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Where the tokens come from: a name for people, a list of sources and their kind.

    kind "text": a source is a file path, or the marker `BUILTIN` for the pydoc topics text.
    kind "shards": a source is a token shard (tokenizer/shards.py).
    """

    name: str
    sources: tuple
    kind: str = "text"

    def documents(self) -> tuple[list, list]:
        """(documents, names) for tokenizer/prepare.py: file paths, and the built-in text as bytes."""
        documents = [builtin_text().encode("utf-8") if s == BUILTIN else s for s in self.sources]
        names = ["pydoc_data.topics" if s == BUILTIN else s for s in self.sources]
        return documents, names

    def texts(self):
        """Yield each source's text, in order. A file that is not UTF-8 text (binary, UTF-16, invalid
        UTF-8) is a TextFileError naming it: the rule of `tinyllm tokenizer train` (textstream.py)."""
        from tinyllm.tokenizer import read_text_file  # noqa: PLC0415 - keeps `import tinyllm.data` light
        for source in self.sources:
            if source == BUILTIN:
                yield builtin_text()
            else:
                yield read_text_file(source)

    def text(self) -> str:
        """The whole text, documents joined by a blank line (read into memory: for small corpora)."""
        return DOCUMENT_SEPARATOR.join(self.texts())

    def fingerprint(self) -> str:
        """A hash of what the text is made of: file paths, sizes and modification times."""
        h = hashlib.sha256()
        for source in self.sources:
            if source == BUILTIN:
                h.update(f"builtin pydoc_data.topics {sys.version_info[:3]}\n".encode())
            else:
                st = os.stat(source)
                h.update(f"{os.path.abspath(source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def builtin_text() -> str:
    """The standard library's English help topics, joined in sorted key order."""
    from pydoc_data.topics import topics  # noqa: PLC0415 - only when asked for
    return "\n".join(topics[key] for key in sorted(topics))


def stdlib_sources() -> list:
    """The standard library's own .py files (tests, idlelib and site-packages excluded), sorted."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib", "__pycache__"}
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders if s not in skip]  # prune: never walk into them
        files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    return sorted(files)


def describe_file_type(path) -> str:
    """'a character device', 'a named pipe (FIFO)', ... for a path that is not a regular file or directory."""
    mode = os.stat(path).st_mode
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _normalise_extensions(extensions) -> tuple:
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    out = []
    for ext in extensions:
        ext = ext.strip().lower()
        if ext:
            out.append(ext if ext.startswith(".") else "." + ext)
    return tuple(out)


def is_shard_file(path) -> bool:
    """Whether a file starts like a token shard (its header is checked when it is read)."""
    try:
        with open(path, "rb") as file:
            return file.read(len(SHARD_MAGIC)) == SHARD_MAGIC
    except OSError:
        return False


def resolve_corpus(data: str | None, extensions=DEFAULT_EXTENSIONS) -> Corpus:
    """The corpus `--data` names (see the module docstring); DataError when it names nothing."""
    if data is None or data == BUILTIN:
        return Corpus("pydoc_data.topics", (BUILTIN,))
    if data == STDLIB:
        return Corpus("stdlib", (BUILTIN, *stdlib_sources()))
    extensions = _normalise_extensions(extensions)
    path = Path(data).expanduser()
    if path.is_file():
        return Corpus(str(path), (str(path),), "shards" if is_shard_file(path) else "text")
    if path.exists() and not path.is_dir():
        raise DataError(f"--data {data}: is {describe_file_type(path)}, not a text file or a directory; "
                        "give a text file, a directory, a glob, or 'stdlib'")
    if path.is_dir():
        refuse_unfinished(data, [str(path)])
        files = sorted(str(p) for p in path.rglob("*") if p.is_file())
        corpus = _text_or_shards(data, str(path), files, extensions)
        if corpus is None:
            raise DataError(f"--data {data}: the directory has no files ending in {', '.join(extensions)} and no "
                            "token shards (.bin); pick the extensions with --data-ext (e.g. --data-ext .txt,.md)")
        return corpus
    if any(ch in data for ch in "*?["):
        files = sorted(p for p in globlib.glob(os.path.expanduser(data), recursive=True) if os.path.isfile(p))
        corpus = _text_or_shards(data, data, files, ())
        if corpus is None:
            raise DataError(f"--data {data}: the pattern matches no files; check the pattern or quote it "
                            "so the shell does not expand it")
        return corpus
    raise DataError(f"--data {data}: no such file or directory; give a text file, a directory, a glob, "
                    f"'{STDLIB}', or leave --data out for the built-in corpus")


def _text_or_shards(data: str, name: str, files: list, extensions: tuple) -> Corpus | None:
    """The corpus of a folder's or a glob's files: its token shards (.bin files that start like one)
    or its text files, not both."""
    shards = [f for f in files if f.lower().endswith(".bin") and is_shard_file(f)]
    texts = [f for f in files if not f.lower().endswith(".bin") and
             (not extensions or os.path.splitext(f)[1].lower() in extensions)]
    if shards and texts:
        raise DataError(f"--data {data}: holds both token shards ({shards[0]}, ...) and text files ({texts[0]}, ...); "
                        "train on one kind: keep the shards in a folder of their own (or narrow --data-ext)")
    if shards:
        return Corpus(name, tuple(shards), "shards")
    return Corpus(name, tuple(texts)) if texts else None


# ---- tokenizers ------------------------------------------------------------------------


def tokenizer_spec_is_file(spec: str) -> bool:
    return spec not in ("char", "bpe")


def build_tokenizer(spec: str, corpus: Corpus, vocab_size: int | None = None, workers: int | None = None,
                    progress: bool | str | None = None, log=None):
    """`char`: the corpus's characters; `bpe`: byte-level BPE trained on the corpus (gpt4 split); else a
    file. The corpus is read streaming, on `workers` processes, as `prepare_dataset` reads it."""
    from tinyllm import tokenizer as tok  # noqa: PLC0415 - keeps `import tinyllm.data` light

    if spec == "bpe" and (vocab_size is None or vocab_size < 257):
        raise DataError(f"--vocab-size {vocab_size}: a byte-level BPE vocabulary needs at least 257 "
                        "entries (256 bytes + 1 merge); try --vocab-size 512")
    if spec not in ("char", "bpe"):
        return load_tokenizer_file(spec)
    documents, names = corpus.documents()
    options = dict(separator=DOCUMENT_SEPARATOR, workers=workers, names=names, progress=progress, log=log)
    if spec == "char":
        return tok.CharTokenizer(sorted(tok.prepare.corpus_characters(documents, **options)))
    counts = tok.count_chunks(documents, "gpt4", **options)
    return tok.BPETokenizer.from_chunk_counts(counts, vocab_size, "gpt4", progress=progress)


def load_tokenizer_file(path: str):
    from tinyllm import tokenizer as tok  # noqa: PLC0415

    if not os.path.isfile(path):
        raise DataError(f"--tokenizer {path}: no such file; use 'char', 'bpe' or a tokenizer file "
                        "written by `tinyllm tokenizer train`")
    try:
        return tok.load_tokenizer(path)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"--tokenizer {path}: cannot be read as a tokenizer ({error})") from None


# ---- datasets: token shards --------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """Token ids of a corpus, split into train and val (memory-mapped: an array, or a
    tokenizer.shards.ConcatenatedTokens over several shards)."""

    train: object
    val: object
    tokenizer: object
    cache_dir: str
    meta: dict

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)


TOKENIZER_FILE = "tokenizer.json"


def cache_key(corpus: Corpus, tokenizer_spec: str, vocab_size: int | None, val_fraction: float) -> str:
    h = hashlib.sha256()
    h.update(f"tinyllm-data v{CACHE_FORMAT}\n{corpus.fingerprint()}\n{val_fraction!r}\n".encode())
    if tokenizer_spec_is_file(tokenizer_spec):
        h.update(f"file {load_tokenizer_file(tokenizer_spec).hash()}\n".encode())
    else:
        h.update(f"{tokenizer_spec} {vocab_size if tokenizer_spec == 'bpe' else ''}\n".encode())
    return h.hexdigest()[:16]


def split_point(n_tokens: int, val_fraction: float) -> int:
    """Index where val starts: the first int((1 - f) * n) tokens train (nanoGPT's split)."""
    return int((1.0 - val_fraction) * n_tokens)


def prepare_dataset(corpus: Corpus, tokenizer_spec: str = "char", out_dir: str | os.PathLike = ".",
                    vocab_size: int | None = None, val_fraction: float = 0.1, log=None,
                    workers: int | None = None, progress: bool | str | None = None) -> Dataset:
    """The dataset of `corpus`: shards read as they are, or text tokenized into
    `<out_dir>/data/<key>/` (or that cache reused), split into train and val.

    workers: processes for tokenizing (0 or None: one per core). progress: "bar", "log" (a
    `log` line now and then), "none", or "auto" (a bar on a terminal, else lines).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: must be between 0 and 1 (e.g. 0.1)")
    log = log or (lambda message: None)
    if corpus.kind == "shards":
        return open_shards(corpus, tokenizer_spec, val_fraction, log)
    key = cache_key(corpus, tokenizer_spec, vocab_size, val_fraction)
    data_root = Path(out_dir) / "data"
    cache_dir = data_root / key
    meta_path = cache_dir / "meta.json"
    if meta_path.is_file():
        try:
            return _open_cached(cache_dir, meta_path)
        except (OSError, ValueError, KeyError, TypeError) as error:   # a meta.json of the wrong types too
            log(f"data cache {cache_dir} is unusable ({error}); rebuilding it")
    documents, names = corpus.documents()
    sizes = [len(d) if isinstance(d, bytes) else os.path.getsize(d) for d in documents]
    if sizes == [0]:
        raise DataError(f"--data {corpus.name}: the corpus is empty")
    staging = data_root / f"{key}.partial"  # kept when interrupted: the next run goes on from it
    staging.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tokenizer = _staged_tokenizer(staging, tokenizer_spec, corpus, vocab_size, workers, progress, log)
    from tinyllm.tokenizer import encode_to_shards, read_shard_header  # noqa: PLC0415

    log(f"tokenizing {corpus.name} ({len(documents)} source(s), {sum(sizes) / 1e6:,.1f} MB) with tokenizer "
        f"{tokenizer_spec!r}")
    shards = encode_to_shards(tokenizer, documents, staging, names=names, separator=DOCUMENT_SEPARATOR,
                              shard_tokens=SHARD_TOKENS, workers=workers, progress=progress, log=log)
    n_tokens = sum(read_shard_header(path).num_tokens for path in shards)  # checked whole when opened, below
    n_train = split_point(n_tokens, val_fraction)
    meta = {"format": CACHE_FORMAT, "key": key, "corpus": corpus.name, "n_sources": len(corpus.sources),
            "n_tokens": n_tokens, "n_train": n_train, "n_val": n_tokens - n_train, "val_fraction": val_fraction,
            "tokenizer": tokenizer_spec, "vocab_size": int(tokenizer.vocab_size), "tokenizer_hash": tokenizer.hash(),
            "shards": [os.path.basename(path) for path in shards]}
    io.write_json(staging / "meta.json", meta)
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
    os.replace(staging, cache_dir)
    io.fsync_directory(data_root)
    for stale in data_root.iterdir():  # one cache per run directory: drop the outdated ones and unfinished ones
        if stale.name != key and is_cache_dir(stale):   # only caches: a corpus the user keeps under DIR/data/ stays
            shutil.rmtree(stale, ignore_errors=True)
    seconds = time.perf_counter() - started
    log(f"wrote {meta['n_train']:,} train and {meta['n_val']:,} val tokens to {cache_dir} (vocab "
        f"{meta['vocab_size']}) in {seconds:.1f} s")
    return _open_cached(cache_dir, cache_dir / "meta.json")


def is_cache_dir(path: Path) -> bool:
    """A token cache this module wrote: a directory named by a cache key (finished, holding meta.json),
    or by a cache key and ".partial" (a preparation that was interrupted)."""
    name = path.name.removesuffix(".partial")
    finished = name == path.name
    return (path.is_dir() and not path.is_symlink() and len(name) == 16
            and all(c in "0123456789abcdef" for c in name) and (not finished or (path / "meta.json").is_file()))


def _staged_tokenizer(staging: Path, spec: str, corpus: Corpus, vocab_size, workers, progress, log):
    """The run's tokenizer: the one an interrupted preparation saved in `staging`, or a new one (saved there)."""
    from tinyllm import tokenizer as tok  # noqa: PLC0415

    saved = staging / TOKENIZER_FILE
    if saved.is_file():
        try:
            return tok.load_tokenizer(saved)
        except (OSError, ValueError):
            pass
    if not tokenizer_spec_is_file(spec):
        log(f"building the {spec!r} tokenizer of {corpus.name}")
    tokenizer = build_tokenizer(spec, corpus, vocab_size, workers, progress, log)
    tokenizer.save(saved)
    return tokenizer


def _read_checked(path, tokenizer) -> np.ndarray:
    """A shard's ids, checked whole (its CRC-32, every id below the tokenizer's vocabulary), memory-mapped."""
    from tinyllm.tokenizer import read_shard, read_shard_header  # noqa: PLC0415

    if read_shard_header(path).vocab_size > tokenizer.vocab_size:
        raise ValueError(f"{path}: written for a larger vocabulary than its tokenizer's")
    return read_shard(path, tokenizer_hash=tokenizer.hash(), verify=True)


def _open_cached(cache_dir: Path, meta_path: Path) -> Dataset:
    """The cached dataset, checked whole: the shards' CRC-32 and every id below the tokenizer's
    vocabulary (one pass over the ids, a block at a time), so a damaged cache is found here and
    rebuilt, never met as an out-of-range id steps later. Any problem raises ValueError, OSError,
    KeyError or TypeError (-> rebuild)."""
    from tinyllm import tokenizer as tok  # noqa: PLC0415

    check_file_size(meta_path, MAX_METADATA_BYTES, "meta.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {meta.get('format') if isinstance(meta, dict) else None} is not {CACHE_FORMAT}")
    tokenizer = tok.load_tokenizer(cache_dir / TOKENIZER_FILE)
    concatenate_shards = tok.shards.concatenate_shards
    if tokenizer.hash() != meta.get("tokenizer_hash") or not isinstance(meta.get("shards"), list):
        raise ValueError("meta.json does not match the cache's tokenizer and shards")
    tokens = concatenate_shards([_read_checked(cache_dir / os.path.basename(str(name)), tokenizer)
                                 for name in meta["shards"]])
    if len(tokens) != meta.get("n_tokens") or meta.get("n_train") != split_point(len(tokens), meta.get("val_fraction")):
        raise ValueError("shard lengths do not match meta.json")
    n_train = meta["n_train"]
    return Dataset(train=tokens[:n_train], val=tokens[n_train:], tokenizer=tokenizer, cache_dir=str(cache_dir),
                   meta=meta)


def open_shards(corpus: Corpus, tokenizer_spec: str, val_fraction: float, log=None) -> Dataset:
    """The dataset of token shards (see the module docstring), checked (`checked_shards`) against
    the tokenizer that wrote them, `--tokenizer FILE`."""
    log = log or (lambda message: None)
    if not tokenizer_spec_is_file(tokenizer_spec):
        from tinyllm.tokenizer import read_shard_header  # noqa: PLC0415
        hashes = sorted({read_shard_header(s).tokenizer_hash or "" for s in corpus.sources} - {""})
        written_by = f"tokenizer {hashes[0][:16]}" if hashes else "an unknown tokenizer"
        raise DataError(f"--data {corpus.name}: holds token shards (written by {written_by}); pass the tokenizer "
                        "that wrote them with --tokenizer FILE (the file given to `tinyllm tokenizer encode`)")
    from tinyllm.tokenizer.shards import concatenate_shards  # noqa: PLC0415

    tokenizer = load_tokenizer_file(tokenizer_spec)
    arrays = checked_shards(corpus, tokenizer, f"--tokenizer {tokenizer_spec}", log)
    named_val = [path for path in arrays if VALIDATION_NAME.search(os.path.basename(path))]
    if named_val:
        train_paths = [path for path in arrays if path not in named_val]
        if not train_paths:
            raise DataError(f"--data {corpus.name}: every shard is named as validation ({named_val[0]}, ...); "
                            "give the training shards too")
        train, val = (concatenate_shards([arrays[p] for p in paths]) for paths in (train_paths, named_val))
        split = f"{len(named_val)} shard(s) named val"
    else:
        tokens = concatenate_shards(list(arrays.values()))
        n_train = split_point(len(tokens), val_fraction)
        train, val = tokens[:n_train], tokens[n_train:]
        split = f"the last {val_fraction:g} of the tokens"
    meta = {"corpus": corpus.name, "n_shards": len(arrays), "n_tokens": len(train) + len(val), "n_train": len(train),
            "n_val": len(val), "validation": split, "vocab_size": int(tokenizer.vocab_size),
            "tokenizer_hash": tokenizer.hash()}
    log(f"training from {len(arrays)} shard(s) of {corpus.name}: {len(train):,} train and {len(val):,} val tokens "
        f"(validation: {split})")
    return Dataset(train=train, val=val, tokenizer=tokenizer,
                   cache_dir=os.path.dirname(os.path.abspath(corpus.sources[0])), meta=meta)


def checked_shards(corpus: Corpus, tokenizer, tokenizer_name: str, log) -> dict:
    """path -> ids (memory-mapped) of a shard corpus, every shard checked: finished (no manifest of
    an interrupted `tinyllm tokenizer encode` beside it), written by `tokenizer`, whole (CRC-32),
    every id below its vocabulary. DataError or ShardError naming the file otherwise."""
    from tinyllm import tokenizer as tok  # noqa: PLC0415

    log = log or (lambda message: None)
    refuse_unfinished(corpus.name, {os.path.dirname(os.path.abspath(s)) for s in corpus.sources})
    headers = [tok.read_shard_header(path) for path in corpus.sources]
    for header in headers:
        if header.tokenizer_hash not in (None, tokenizer.hash()):
            raise DataError(f"{header.path}: written by another tokenizer ({header.tokenizer_hash[:16]}) than "
                            f"{tokenizer_name} ({tokenizer.hash()[:16]}); pass the tokenizer that encoded it, or "
                            "encode the text again with this one")
        if header.vocab_size > tokenizer.vocab_size:
            raise DataError(f"{header.path}: holds ids up to {header.vocab_size - 1:,}, beyond the "
                            f"{tokenizer.vocab_size:,} ids of {tokenizer_name}; pass the tokenizer that encoded it")
    total = sum(h.num_tokens * h.dtype.itemsize for h in headers)
    if total > 100e6:
        log(f"checking {len(headers)} shard(s) of {corpus.name} ({total / 1e6:,.0f} MB)")
    for header in headers:
        tok.verify_shard(header)
    return {header.path: tok.read_shard(header.path) for header in headers}


def refuse_unfinished(name: str, folders) -> None:
    """A DataError when a folder holds the manifest of an interrupted `tinyllm tokenizer encode`."""
    from tinyllm.tokenizer.prepare import read_manifest  # noqa: PLC0415

    for folder in sorted(folders):
        for path in sorted(globlib.glob(os.path.join(globlib.escape(folder), "*_manifest.json"))):
            manifest = read_manifest(path)
            if manifest is not None and not manifest.get("complete"):
                raise DataError(f"--data {name}: {path} records an unfinished encoding (stopped after "
                                f"{len(manifest.get('shards', []))} shard(s)); run the same `tinyllm tokenizer "
                                "encode` again to finish it (it keeps the finished shards)")


def check_split_fits(dataset: Dataset, block_size: int) -> None:
    """Both splits must hold at least one window of block_size + 1 tokens."""
    for split, tokens in (("train", dataset.train), ("val", dataset.val)):
        if len(tokens) < block_size + 2:
            raise DataError(
                f"the {split} split has {len(tokens)} tokens, fewer than --block-size {block_size} + 2; "
                "use a smaller --block-size, more data, or a different --val-fraction")


def corpus_tokens(corpus: Corpus, tokenizer, val_fraction: float | None = None):
    """The ids of a corpus under `tokenizer` (text encoded in memory; shards as they are, checked
    against it); with `val_fraction`, only the validation split, as training holds it out."""
    from tinyllm.tokenizer.shards import concatenate_shards  # noqa: PLC0415

    if corpus.kind == "shards":
        arrays = checked_shards(corpus, tokenizer, "the checkpoint's tokenizer", None)
        named_val = [arrays[p] for p in arrays if VALIDATION_NAME.search(os.path.basename(p))]
        if val_fraction is not None and named_val:
            return concatenate_shards(named_val)
        tokens = concatenate_shards(list(arrays.values()))
    else:
        tokens = np.asarray(tokenizer.encode_ordinary(corpus.text()), dtype=np.int64)
    return tokens[split_point(len(tokens), val_fraction):] if val_fraction is not None else tokens


# ---- batches -----------------------------------------------------------------------------


class BatchSampler:
    """Random (x, y) windows from a token array, reproducible from a seed and a saved state.

    Each batch draws `batch_size` start offsets uniformly from [0, n - block_size) and
    takes `block_size + 1` tokens from each: x is the first block_size, y the last
    block_size (x shifted by one).
    """

    def __init__(self, tokens, block_size: int, batch_size: int, seed: int):
        if len(tokens) < block_size + 2:
            raise DataError(f"{len(tokens)} tokens cannot fill a window of block_size {block_size} + 1")
        self.tokens = tokens
        self.block_size = int(block_size)
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(seed)
        self._offsets = np.arange(self.block_size + 1)

    def next_batch(self) -> tuple:
        starts = self.rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        windows = np.asarray(self.tokens[starts[:, None] + self._offsets], dtype=np.int64)  # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
