"""Training data: corpora -> cached token shards (memmapped) -> seeded random batches.

    corpus = resolve_corpus("texts/", extensions=(".txt", ".md"))     # or None: built-in
    dataset = prepare_dataset(corpus, "char", out_dir="runs/demo")    # tokenize once, cached
    sampler = BatchSampler(dataset.train, block_size=64, batch_size=12, seed=1337)
    x, y = sampler.next_batch()                                        # (B, T) int64 each

Corpora (`--data`):
- nothing: the built-in corpus every Python install has, the English help text of the
  standard library's `pydoc_data.topics` (about 466 KB), so training needs no download;
- `stdlib`: the built-in text plus the standard library's own `.py` sources (about
  11 MB of code, tests excluded);
- a file, a directory (searched recursively, filtered by extension) or a glob.

Tokenizing happens once: the token ids go to two shard files (train and val) under
`<out>/data/<key>/`, where the key hashes the corpus files (paths, sizes, modification
times) and the tokenizer choice. A later run with the same corpus and tokenizer reads
the shards back (memory-mapped); a changed corpus or tokenizer builds a fresh cache.
The split is deterministic: the last `val_fraction` of the tokens is validation, as in
nanoGPT. Batches are random windows of `block_size + 1` tokens, `x = w[:-1]`,
`y = w[1:]`, drawn by a seeded NumPy Generator whose state the checkpoint keeps.

`download("tinyshakespeare")` fetches the classic char-rnn corpus over HTTP(S).

Left out: corpora larger than memory (documents are tokenized whole), document
boundaries inside a window (documents are joined with a blank line), sharding across
processes (a data-parallel rank seeds its own sampler).
"""
from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyllm import io
from tinyllm.errors import UserError
from tinyllm.fields import check, is_number, is_positive_int, setting
from tinyllm.limits import MAX_METADATA_BYTES, check_file_size, check_fits_in_memory

BUILTIN = "builtin"
STDLIB = "stdlib"
DEFAULT_EXTENSIONS = (".txt", ".md", ".rst", ".py")
DOCUMENT_SEPARATOR = "\n\n"
CACHE_FORMAT = 1  # bump when the cache layout or the way text is joined changes
CORPUS_MEMORY_FACTOR = 12  # bytes of memory per byte of corpus while tokenizing: its text, then int64 ids


class DataError(UserError):
    """A corpus or dataset problem the user can fix (message names the path and the fix)."""


@dataclass(frozen=True)
class DataSettings:
    """What a pretraining run reads: the corpus, the tokenizer and the validation split (`--data` ...)."""

    data: str | None = setting(None, "a text file, a directory, a glob, or 'stdlib' "
                                     "(default: the built-in pydoc topics corpus)")
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
    """`settings` (by flat name) with every path among PATH_SETTINGS made absolute (tinyllm.io.absolute_path)."""
    return {name: io.absolute_path(value, PATH_SETTINGS[name]) if name in PATH_SETTINGS else value
            for name, value in settings.items()}


# ---- corpora ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """Where the text comes from: a name for people and a list of sources.

    A source is a file path, or the marker `BUILTIN` for the pydoc topics text.
    """

    name: str
    sources: tuple

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


def resolve_corpus(data: str | None, extensions=DEFAULT_EXTENSIONS) -> Corpus:
    """The corpus `--data` names (see the module docstring); DataError when it names nothing."""
    if data is None or data == BUILTIN:
        return Corpus("pydoc_data.topics", (BUILTIN,))
    if data == STDLIB:
        return Corpus("stdlib", (BUILTIN, *stdlib_sources()))
    extensions = _normalise_extensions(extensions)
    path = Path(data).expanduser()
    if path.is_file():
        return Corpus(str(path), (str(path),))
    if path.exists() and not path.is_dir():
        raise DataError(f"--data {data}: is {describe_file_type(path)}, not a text file or a directory; "
                        "give a text file, a directory, a glob, or 'stdlib'")
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*")
                       if p.is_file() and (not extensions or p.suffix.lower() in extensions))
        if not files:
            raise DataError(f"--data {data}: the directory has no files ending in {', '.join(extensions)}; "
                            "pick the extensions with --data-ext (e.g. --data-ext .txt,.md)")
        return Corpus(str(path), tuple(files))
    if any(ch in data for ch in "*?["):
        files = sorted(p for p in globlib.glob(os.path.expanduser(data), recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"--data {data}: the pattern matches no files; check the pattern or quote it "
                            "so the shell does not expand it")
        return Corpus(data, tuple(files))
    raise DataError(f"--data {data}: no such file or directory; give a text file, a directory, a glob, "
                    f"'{STDLIB}', or leave --data out for the built-in corpus")


# ---- tokenizers ------------------------------------------------------------------------


def tokenizer_spec_is_file(spec: str) -> bool:
    return spec not in ("char", "bpe")


def build_tokenizer(spec: str, text: str, vocab_size: int | None = None):
    """`char`: the corpus's characters; `bpe`: byte-level BPE trained on the corpus; else a file."""
    from tinyllm import tokenizer as tok  # noqa: PLC0415 - keeps `import tinyllm.data` light

    if spec == "char":
        return tok.CharTokenizer.train(text)
    if spec == "bpe":
        if vocab_size is None or vocab_size < 257:
            raise DataError(f"--vocab-size {vocab_size}: a byte-level BPE vocabulary needs at least 257 "
                            "entries (256 bytes + 1 merge); try --vocab-size 512")
        return tok.BPETokenizer.train(text, vocab_size=vocab_size)
    return load_tokenizer_file(spec)


def load_tokenizer_file(path: str):
    from tinyllm import tokenizer as tok  # noqa: PLC0415

    if not os.path.isfile(path):
        raise DataError(f"--tokenizer {path}: no such file; use 'char', 'bpe' or a tokenizer file "
                        "written by `tinyllm tokenizer train`")
    try:
        return tok.load_tokenizer(path)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"--tokenizer {path}: cannot be read as a tokenizer ({error})") from None


# ---- datasets: cached token shards -----------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """Token ids of a corpus, split into train and val (memory-mapped arrays)."""

    train: np.ndarray
    val: np.ndarray
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
                    vocab_size: int | None = None, val_fraction: float = 0.1, log=None) -> Dataset:
    """Tokenize `corpus` into `<out_dir>/data/<key>/` (or reuse that cache) and split it."""
    from tinyllm import tokenizer as tok  # noqa: PLC0415

    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: must be between 0 and 1 (e.g. 0.1)")
    log = log or (lambda message: None)
    key = cache_key(corpus, tokenizer_spec, vocab_size, val_fraction)
    data_root = Path(out_dir) / "data"
    cache_dir = data_root / key
    meta_path = cache_dir / "meta.json"
    if meta_path.is_file():
        try:
            return _open_cached(cache_dir, meta_path)
        except (OSError, ValueError) as error:
            log(f"data cache {cache_dir} is unusable ({error}); rebuilding it")
    log(f"tokenizing {corpus.name} ({len(corpus.sources)} source(s)) with tokenizer {tokenizer_spec!r}")
    check_fits_in_memory(sum(os.path.getsize(s) for s in corpus.sources if s != BUILTIN), CORPUS_MEMORY_FACTOR,
                         f"--data {corpus.name}", "train on less text (the corpus is tokenized in memory)")
    text = corpus.text()
    if not text:
        raise DataError(f"--data {corpus.name}: the corpus is empty")
    tokenizer = build_tokenizer(tokenizer_spec, text, vocab_size)
    ids = np.asarray(tokenizer.encode_ordinary(text), dtype=np.int64)  # special-token text stays text
    n_train = split_point(len(ids), val_fraction)

    data_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=data_root))
    os.chmod(staging, io.default_mode(directory=True))
    try:
        tok.write_shard(staging / "train.bin", ids[:n_train], tokenizer.vocab_size, tokenizer.hash())
        tok.write_shard(staging / "val.bin", ids[n_train:], tokenizer.vocab_size, tokenizer.hash())
        tokenizer.save(staging / TOKENIZER_FILE)
        meta = {"format": CACHE_FORMAT, "key": key, "corpus": corpus.name, "n_sources": len(corpus.sources),
                "n_chars": len(text), "n_tokens": int(len(ids)), "n_train": int(n_train),
                "n_val": int(len(ids) - n_train), "val_fraction": val_fraction, "tokenizer": tokenizer_spec,
                "vocab_size": int(tokenizer.vocab_size), "tokenizer_hash": tokenizer.hash()}
        io.write_json(staging / "meta.json", meta)
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(staging, cache_dir)
        io.fsync_directory(data_root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for stale in data_root.iterdir():  # one cache per run directory: drop the outdated ones (only caches:
        if stale.name != key and is_cache_dir(stale):   # a corpus the user keeps under DIR/data/ stays)
            shutil.rmtree(stale, ignore_errors=True)
    log(f"wrote {meta['n_train']:,} train and {meta['n_val']:,} val tokens to {cache_dir} "
        f"(vocab {meta['vocab_size']})")
    return _open_cached(cache_dir, cache_dir / "meta.json")


def is_cache_dir(path: Path) -> bool:
    """A token cache this module wrote: a directory named by a cache key, holding meta.json."""
    return (path.is_dir() and not path.is_symlink() and len(path.name) == 16
            and all(c in "0123456789abcdef" for c in path.name) and (path / "meta.json").is_file())


def _open_cached(cache_dir: Path, meta_path: Path) -> Dataset:
    """The cached dataset, checked whole: the shards' CRC-32 and every id below the tokenizer's
    vocabulary (one pass over the ids), so a damaged cache is found here and rebuilt, never met
    as an out-of-range id steps later. Any problem raises ValueError or OSError (-> rebuild)."""
    from tinyllm import tokenizer as tok  # noqa: PLC0415

    check_file_size(meta_path, MAX_METADATA_BYTES, "meta.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {meta.get('format') if isinstance(meta, dict) else None} is not {CACHE_FORMAT}")
    tokenizer = tok.load_tokenizer(cache_dir / TOKENIZER_FILE)
    splits = {}
    for split in ("train", "val"):
        path = cache_dir / f"{split}.bin"
        if tok.read_shard_header(path).vocab_size != tokenizer.vocab_size:
            raise ValueError(f"{path}: written for another vocabulary than {cache_dir / TOKENIZER_FILE}'s")
        splits[split] = tok.read_shard(path, tokenizer_hash=meta.get("tokenizer_hash"), verify=True)
        if len(splits[split]) != meta.get(f"n_{split}"):
            raise ValueError("shard lengths do not match meta.json")
    return Dataset(train=splits["train"], val=splits["val"], tokenizer=tokenizer, cache_dir=str(cache_dir), meta=meta)


def check_split_fits(dataset: Dataset, block_size: int) -> None:
    """Both splits must hold at least one window of block_size + 1 tokens."""
    for split, tokens in (("train", dataset.train), ("val", dataset.val)):
        if len(tokens) < block_size + 2:
            raise DataError(
                f"the {split} split has {len(tokens)} tokens, fewer than --block-size {block_size} + 2; "
                "use a smaller --block-size, more data, or a different --val-fraction")


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


# ---- downloads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    url: str
    filename: str
    size: int
    sha256: str


DOWNLOADS = {
    "tinyshakespeare": Download(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        filename="tinyshakespeare.txt", size=1_115_394,
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}


def download(name: str, out: str | os.PathLike | None = None, url: str | None = None, timeout: float = 60.0,
             opener=None) -> Path:
    """Fetch a known corpus to `out` (default: ./<name>.txt) and check its size and hash.

    `url` overrides the source (a mirror, or a file:// URL); `opener` defaults to
    urllib.request.urlopen. The file appears only when complete and verified.
    """
    if name not in DOWNLOADS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DOWNLOADS))}")
    spec = DOWNLOADS[name]
    out = Path(out) if out is not None else Path(spec.filename)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = url or spec.url
    opener = opener or urllib.request.urlopen
    try:
        with opener(source, timeout=timeout) as response:
            data = response.read(spec.size + 1)   # never more than one byte past the known size
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"could not download {name} from {source} ({reason}); check the network connection, "
                        f"or fetch the file another way and pass it with --data FILE") from None
    if len(data) != spec.size:
        got = f"more than {spec.size:,}" if len(data) > spec.size else f"{len(data):,}"
        raise DataError(f"downloaded {name} from {source} has {got} bytes, expected {spec.size:,}; "
                        "the download was cut short or the file changed: try again")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise DataError(f"downloaded {name} from {source} has sha256 {digest}, expected {spec.sha256}; "
                        "the file is not the expected corpus")
    io.write_bytes(out, data)
    return out
