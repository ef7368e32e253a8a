"""Tokenizers: characters, and byte-level BPE that encodes exactly like tiktoken.

    from tinyllm.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer
    tok = BPETokenizer.train(text, vocab_size=4096, pattern="gpt4")
    ids = tok.encode(text); text = tok.decode(ids)
    tok.save("tok.txt"); tok = load_tokenizer("tok.txt")

Token shards for training data: write_shard, read_shard (shards.py); a corpus encoded into
shards on every core, resumably: encode_files_to_shards (prepare.py). The `tinyllm
tokenizer ...` commands: cli.py.
"""

from .base import EOT_TOKEN, Tokenizer
from .bpe import BPETokenizer
from .char import CharTokenizer
from .files import load_tokenizer
from .lines import TokenizerFileError
from .openai_files import gpt2_bytes_to_unicode
from .patterns import GPT2_PATTERN, GPT4_PATTERN, split_text
from .prepare import count_chunks, encode_files_to_shards, encode_to_shards
from .shards import ShardError, ShardHeader, read_shard, read_shard_header, verify_shard, write_shard
from .textstream import TextFileError, read_text_file
from .workers import WorkerError

__all__ = [
    "BPETokenizer", "CharTokenizer", "Tokenizer", "TokenizerFileError", "load_tokenizer",
    "EOT_TOKEN", "GPT2_PATTERN", "GPT4_PATTERN", "split_text", "gpt2_bytes_to_unicode",
    "ShardError", "ShardHeader", "write_shard", "read_shard", "read_shard_header", "verify_shard",
    "encode_files_to_shards", "encode_to_shards", "count_chunks", "TextFileError", "read_text_file",
    "WorkerError",
]
