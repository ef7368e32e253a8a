"""Tokenizers: characters, and byte-level BPE that encodes exactly like tiktoken.

    from tinyllm.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer
    tok = BPETokenizer.train(text, vocab_size=4096, pattern="gpt4")
    ids = tok.encode(text); text = tok.decode(ids)
    tok.save("tok.txt"); tok = load_tokenizer("tok.txt")

Token shards for training data: write_shard, read_shard, encode_files_to_shards
(shards.py). The `tinyllm tokenizer ...` commands: cli.py.
"""

from .base import EOT_TOKEN, Tokenizer
from .bpe import BPETokenizer
from .openai_files import gpt2_bytes_to_unicode
from .char import CharTokenizer
from .files import load_tokenizer
from .lines import TokenizerFileError
from .patterns import GPT2_PATTERN, GPT4_PATTERN, split_text
from .shards import (ShardError, ShardHeader, encode_files_to_shards, read_shard,
                     read_shard_header, write_shard)
from .textstream import TextFileError, read_text_file

__all__ = [
    "BPETokenizer", "CharTokenizer", "Tokenizer", "TokenizerFileError", "load_tokenizer",
    "EOT_TOKEN", "GPT2_PATTERN", "GPT4_PATTERN", "split_text", "gpt2_bytes_to_unicode",
    "ShardError", "ShardHeader", "write_shard", "read_shard", "read_shard_header",
    "encode_files_to_shards", "TextFileError", "read_text_file",
]
