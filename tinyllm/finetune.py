"""Finetuning a pretrained GPT: text classification and instruction following, with or without LoRA.

    config = FinetuneConfig(task="classify", init_from="runs/pretrain", data="reviews.csv")
    train_config = TrainConfig(out="runs/clf", max_iters=200, lr=1e-3, batch_size=16)
    result = finetune(config, train_config)       # the training loop of tinyllm.train, our batches

Classification (`task="classify"`): a CSV, TSV or JSONL of `text` and `label` (field names
configurable). Each text is tokenized, truncated to its first block_size tokens and padded
(on the right, with `pad_id`) to the longest text of its batch. A `SequenceClassifier`
runs the GPT's blocks and final norm, pools the hidden states of each sequence (the last
real token's, or the mean over its real tokens) and maps them to class logits with a new
Linear head. With causal attention a real token never sees the padding after it, so the
last-token features do not depend on how much padding a batch has. The examples are split
once, by a seeded permutation, into train / val / test; evaluations log loss and accuracy,
and the end of the run reports the test accuracy.

Instruction following (`task="instruct"`): JSON (a list) or JSONL of Alpaca records
{"instruction", "input" (optional), "output"}. A `PromptTemplate` turns the instruction and
input into a prompt; the training sequence is prompt + output + end-of-text, and the
targets of every position that predicts a prompt token (or padding) are -100, which the
cross-entropy ignores: only the response is learned.

    tokens:   p0 p1 p2 | r0 r1 eot        (prompt | response)
    inputs:   p0 p1 p2 r0 r1
    targets: -100 -100 r0 r1 eot          (-100: ignored)

Freezing (`freeze`): "none", "all" (only the new head, or the adapters, train),
"all-but-last:N" (embeddings and all blocks but the last N frozen), or comma-separated
parameter-name prefixes ("wte,wpe,blocks.0"). LoRA (`lora_rank` > 0, see tinyllm.lora)
freezes the whole base model and trains adapters (and the classification head).

Checkpoints hold only the parameters that train (the adapters and head with LoRA: a
small file), plus where the base came from and a hash of its frozen weights; loading one
(`load_finetuned`) rebuilds the model from `init_from` and checks the hash, so a base that
changed since is an error rather than a silently different model. At the end of a LoRA
run the adapters are also written as `DIR/adapter/` (tinyllm.lora.save_lora).

Left out: multi-label classification, regression heads, class weighting, chat templates
with several turns, packing several short examples into one sequence, early stopping.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autograd import backend, no_grad
from autograd import functional as F
from autograd.tensor import Tensor

from . import checkpoint as ckpt
from . import io, nn
from .data import DataError
from .lora import LoRAConfig, apply_lora, freeze, lora_layers, save_lora, trainable_parameters
from .model import GPT, GPTConfig, unknown_fields
from .train import ConfigError, Trainer, TrainConfig, make_optimizer, resume_checkpoint

TASKS = ("classify", "instruct")
POOLINGS = ("last", "mean")
DATA_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}
IGNORE_INDEX = -100


# =====================================================================================
# ---- reading records: CSV, TSV, JSON, JSONL; every error names the file and record --
# =====================================================================================


class FinetuneDataError(DataError):
    """A finetuning data file the user must fix; the message names the file and the record."""


def data_format(path) -> str:
    """'csv' | 'tsv' | 'jsonl' | 'json' from the file's extension, or an error naming the file."""
    path = Path(path)
    kind = DATA_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise FinetuneDataError(f"{path}: unknown data format {path.suffix or '(no extension)'!r}; "
                                f"use one of {', '.join(DATA_FORMATS)}")
    if not path.is_file():
        raise FinetuneDataError(f"{path}: no such file; --data takes a {', '.join(DATA_FORMATS)} file")
    return kind


def read_records(path) -> list:
    """[(record number, dict)] from a CSV/TSV (header row), JSON (a list of objects) or JSONL file.

    Record numbers count from 1: data rows of a CSV/TSV, objects of a JSON list, non-blank
    lines of a JSONL file (errors also give the line).
    """
    path = Path(path)
    kind = data_format(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise FinetuneDataError(f"{path}: not UTF-8 text ({error})") from None
    if kind in ("csv", "tsv"):
        return _read_table(path, text, "," if kind == "csv" else "\t")
    if kind == "jsonl":
        records = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            number = len(records) + 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise FinetuneDataError(f"{path}: record {number} (line {line_number}) is not valid JSON "
                                        f"({error.msg}); a .jsonl file holds one JSON object per line") from None
            records.append((number, _check_object(path, number, record)))
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FinetuneDataError(f"{path}: not valid JSON (line {error.lineno}: {error.msg}); a .json file holds "
                                "one list of objects (for one object per line, name the file .jsonl)") from None
    if not isinstance(data, list):
        raise FinetuneDataError(f"{path}: the JSON file holds a {type(data).__name__}, not a list of records")
    return [(i, _check_object(path, i, record)) for i, record in enumerate(data, start=1)]


def _read_table(path: Path, text: str, delimiter: str) -> list:
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise FinetuneDataError(f"{path}: empty file; expected a header row naming the columns") from None
    header = [name.strip() for name in header]
    records = []
    for number, row in enumerate(reader, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise FinetuneDataError(f"{path}: record {number} has {len(row)} fields, the header has {len(header)} "
                                    f"({', '.join(header)}); quote fields that contain the delimiter")
        records.append((number, dict(zip(header, row))))
    return records


def _check_object(path: Path, number: int, record) -> dict:
    if not isinstance(record, dict):
        raise FinetuneDataError(f"{path}: record {number} is a {type(record).__name__}, not an object with named fields")
    return record


def _text_field(path, number: int, record: dict, name: str, required: bool = True) -> str:
    """record[name] as a non-empty string (or '' when optional and absent), else an error."""
    if name not in record or record[name] is None:
        if not required:
            return ""
        raise FinetuneDataError(f"{path}: record {number} has no {name!r} field (fields: {', '.join(map(str, record))})")
    value = record[name]
    if not isinstance(value, str):
        raise FinetuneDataError(f"{path}: record {number}: {name!r} is a {type(value).__name__}, not text")
    if required and not value.strip():
        raise FinetuneDataError(f"{path}: record {number}: {name!r} is empty")
    return value


# =====================================================================================
# ---- datasets -----------------------------------------------------------------------
# =====================================================================================


@dataclass(frozen=True)
class ClassificationData:
    """Texts with integer labels; label_names[label] is the label as the file spells it."""

    texts: tuple
    labels: np.ndarray        # (N,) int64
    label_names: tuple
    record_numbers: tuple     # the file's record number of each example, for error messages
    path: str


def load_classification_data(path, text_field: str = "text", label_field: str = "label",
                             label_names=None) -> ClassificationData:
    """Read a classification file. With `label_names`, any other label is an error; without,
    the labels are the sorted distinct ones found (at least two)."""
    texts, raw_labels, numbers = [], [], []
    for number, record in read_records(path):
        texts.append(_text_field(path, number, record, text_field))
        if label_field not in record or record[label_field] is None or str(record[label_field]).strip() == "":
            raise FinetuneDataError(f"{path}: record {number} has no {label_field!r} value")
        raw_labels.append(str(record[label_field]).strip())
        numbers.append(number)
    if not texts:
        raise FinetuneDataError(f"{path}: no records")
    if label_names is None:
        label_names = tuple(sorted(set(raw_labels)))
        if len(label_names) < 2:
            raise FinetuneDataError(f"{path}: every record has label {label_names[0]!r}; classification needs "
                                    "at least two labels")
    label_names = tuple(str(name) for name in label_names)
    index = {name: i for i, name in enumerate(label_names)}
    for number, label in zip(numbers, raw_labels):
        if label not in index:
            raise FinetuneDataError(f"{path}: record {number} has label {label!r}, which is not one of the "
                                    f"labels {', '.join(label_names)}; fix the record or add it to --labels")
    labels = np.array([index[label] for label in raw_labels], dtype=np.int64)
    return ClassificationData(tuple(texts), labels, label_names, tuple(numbers), str(path))


@dataclass(frozen=True)
class InstructionRecord:
    """One Alpaca record: an instruction, an optional input, the wanted output."""

    instruction: str
    input: str
    output: str


def load_instruction_data(path) -> list:
    """[(record number, InstructionRecord)] from a JSON list or JSONL file of Alpaca records."""
    if data_format(path) not in ("json", "jsonl"):
        raise FinetuneDataError(f"{path}: instruction data must be .json (a list) or .jsonl records with "
                                "'instruction', optional 'input' and 'output'")
    records = []
    for number, record in read_records(path):
        records.append((number, InstructionRecord(
            instruction=_text_field(path, number, record, "instruction"),
            input=_text_field(path, number, record, "input", required=False),
            output=_text_field(path, number, record, "output"))))
    if not records:
        raise FinetuneDataError(f"{path}: no records")
    return records


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple:
    """(train, val, test) index arrays from one seeded permutation of range(n).

    Each non-zero fraction gets at least one example; train keeps the rest (and at least one).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must be in [0, 1) "
                          "and leave some examples for training")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ConfigError(f"{n} examples cannot be split into val ({n_val}), test ({n_test}) and a training part; "
                          "add examples or lower --val-fraction / --test-fraction")
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


# =====================================================================================
# ---- tokens: truncation, padding, prompt templates, loss masks ----------------------
# =====================================================================================


def pad_id_for(tokenizer) -> int:
    """The end-of-text id when the tokenizer has one, else 0. Any id works: padding is never
    attended to by a real token (it comes after them, attention is causal) and never a target."""
    return tokenizer.eot_id if tokenizer.eot_id is not None else 0


def encode_record(tokenizer, text: str, path, number: int) -> list:
    """tokenizer.encode(text), with an error naming the file and record when it cannot."""
    try:
        return tokenizer.encode(text, disallowed_special=())
    except ValueError as error:
        raise FinetuneDataError(f"{path}: record {number}: cannot tokenize the text ({error})") from None


def encode_texts(tokenizer, data: ClassificationData, block_size: int) -> list:
    """Token ids of every text, truncated to its first block_size tokens."""
    sequences = []
    for text, number in zip(data.texts, data.record_numbers):
        ids = encode_record(tokenizer, text, data.path, number)[:block_size]
        if not ids:
            raise FinetuneDataError(f"{data.path}: record {number}: the text encodes to no tokens")
        sequences.append(ids)
    return sequences


@dataclass(frozen=True)
class PaddedBatch:
    """Right-padded token ids and the true length of each row."""

    ids: np.ndarray       # (B, T) int64
    lengths: np.ndarray   # (B,) int64, 1 <= length <= T


def pad_sequences(sequences, pad_id: int) -> PaddedBatch:
    """[ids, ...] -> PaddedBatch, padded on the right to the longest sequence."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    ids = np.full((len(sequences), int(lengths.max())), pad_id, dtype=np.int64)  # (B, T)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = seq
    return PaddedBatch(ids, lengths)


@dataclass(frozen=True)
class PromptTemplate:
    """How an instruction (and an optional input) becomes a prompt; the response follows it.

    `with_input` and `without_input` are str.format templates with {instruction} and {input}.
    """

    name: str
    with_input: str
    without_input: str

    def format(self, instruction: str, input: str = "") -> str:  # noqa: A002 - Alpaca's field name
        template = self.with_input if input.strip() else self.without_input
        return template.format(instruction=instruction, input=input)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ALPACA = PromptTemplate(
    name="alpaca",
    with_input=("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"),
    without_input=("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"),
)
TEMPLATES = {"alpaca": ALPACA}


def load_template(spec: str | dict) -> PromptTemplate:
    """A named template ('alpaca'), a dict, or a JSON file with 'with_input' and 'without_input'."""
    if isinstance(spec, dict):
        values = spec
        where = "template"
    elif spec in TEMPLATES:
        return TEMPLATES[spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--template {spec!r}: neither a known template ({', '.join(TEMPLATES)}) nor a file; "
                              'give a JSON file {"with_input": "...{instruction}...{input}...", '
                              '"without_input": "...{instruction}..."}')
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"--template {spec}: not valid JSON ({error})") from None
        where = str(path)
    if not isinstance(values, dict) or not all(isinstance(values.get(k), str) for k in ("with_input", "without_input")):
        raise ConfigError(f"{where}: a template needs the strings 'with_input' and 'without_input'")
    template = PromptTemplate(name=str(values.get("name", "custom")), with_input=values["with_input"],
                              without_input=values["without_input"])
    for field_name, text, needed in (("with_input", template.with_input, ("{instruction}", "{input}")),
                                     ("without_input", template.without_input, ("{instruction}",))):
        for placeholder in needed:
            if placeholder not in text:
                raise ConfigError(f"{where}: the {field_name} template has no {placeholder} placeholder")
        try:
            text.format(instruction="", input="")
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"{where}: the {field_name} template is not a valid format string ({error}); "
                              "write literal braces as {{ and }}") from None
    return template


@dataclass(frozen=True)
class InstructionExample:
    """Token ids of prompt + response (+ end-of-text) and how many of them are prompt."""

    ids: tuple
    n_prompt: int


def encode_instruction(tokenizer, template: PromptTemplate, record: InstructionRecord, block_size: int,
                       path="data", number: int = 1) -> InstructionExample:
    """Prompt and response ids, cut to block_size + 1 tokens (inputs and targets are shifted by one)."""
    prompt = encode_record(tokenizer, template.format(record.instruction, record.input), path, number)
    response = encode_record(tokenizer, record.output, path, number)
    if tokenizer.eot_id is not None:
        response = response + [tokenizer.eot_id]
    if len(prompt) >= block_size:
        raise FinetuneDataError(f"{path}: record {number}: the prompt is {len(prompt)} tokens, which leaves no room "
                                f"for the response in block_size {block_size}; shorten the instruction/input")
    return InstructionExample(tuple((prompt + response)[:block_size + 1]), len(prompt))


def instruction_batch(examples, pad_id: int) -> tuple:
    """(inputs (B, T), targets (B, T)): targets are inputs shifted by one, -100 where they are
    prompt tokens or padding, so only response tokens (and the end-of-text) carry loss."""
    T = max(len(e.ids) for e in examples) - 1
    inputs = np.full((len(examples), T), pad_id, dtype=np.int64)              # (B, T)
    targets = np.full((len(examples), T), IGNORE_INDEX, dtype=np.int64)       # (B, T)
    for row, example in enumerate(examples):
        ids = np.asarray(example.ids, dtype=np.int64)
        n = len(ids) - 1
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = ids[1:]
        # position j predicts token j + 1, a prompt token while j + 1 < n_prompt
        targets[row, :example.n_prompt - 1] = IGNORE_INDEX
    return inputs, targets


# =====================================================================================
# ---- the classification model ---------------------------------------------------------
# =====================================================================================


def pooling_weights(lengths: np.ndarray, T: int, pooling: str, dtype) -> np.ndarray:
    """(B, 1, T) weights whose product with the hidden states (B, T, C) pools each row.

    last: 1 at position length - 1;  mean: 1 / length over the first `length` positions.
    """
    positions = np.arange(T)[None, :]                                         # (1, T)
    if pooling == "last":
        weights = (positions == (lengths[:, None] - 1)).astype(dtype)         # (B, T) one-hot
    elif pooling == "mean":
        weights = (positions < lengths[:, None]).astype(dtype) / lengths[:, None].astype(dtype)
    else:
        raise ConfigError(f"--pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    return weights[:, None, :]                                                # (B, 1, T)


class SequenceClassifier(nn.Module):
    """A GPT body with a Linear head on pooled hidden states: (B, T) ids -> (B, K) class logits.

    The GPT's own LM head is not used (its weights stay in the model, unused and frozen,
    so the base checkpoint still loads by name).
    """

    def __init__(self, gpt: GPT, num_classes: int, pooling: str = "last", seed: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"--pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.gpt = gpt
        self.pooling = pooling
        self.num_classes = int(num_classes)
        self.classifier = nn.Linear(gpt.config.n_embd, num_classes, init_rng=np.random.default_rng(seed),
                                    dtype=gpt.dtype, device=gpt.device)

    # what tinyllm.train.Trainer reads from its model
    @property
    def config(self) -> GPTConfig:
        return self.gpt.config

    @property
    def generator(self):
        return self.gpt.generator

    def features(self, batch: PaddedBatch) -> Tensor:
        """Pooled final hidden states (B, C)."""
        x = self.gpt.embed(batch.ids)                                         # (B, T, C)
        for block in self.gpt.blocks:
            x = block(x)
        x = self.gpt.norm_f(x)                                                # (B, T, C)
        B, T, C = x.shape
        weights = pooling_weights(batch.lengths, T, self.pooling, x.dtype)    # (B, 1, T)
        pooled = Tensor.constant(backend.to_device(weights, x.device)) @ x  # (B, 1, T) @ (B, T, C)
        return pooled.reshape(B, C)

    def forward(self, batch: PaddedBatch, labels=None):
        """(logits (B, K), mean cross-entropy or None)."""
        logits = self.classifier(self.features(batch))                        # (B, K)
        if labels is None:
            return logits, None
        labels = logits.xp.asarray(labels.data if isinstance(labels, Tensor) else labels)
        return logits, F.cross_entropy(logits, labels)


# =====================================================================================
# ---- batches and evaluation -------------------------------------------------------------
# =====================================================================================


class ExampleBatches:
    """Seeded shuffled batches of examples, epoch after epoch, resumable from a tiny state.

    Epoch e visits the examples in the order of a permutation drawn from seed (seed, e);
    a batch that runs past the end of an epoch continues into the next one. The state is
    just (epoch, position), so a checkpoint stores it as JSON.
    """

    def __init__(self, make_batch, indices, batch_size: int, seed: int):
        self.make_batch = make_batch                   # array of example indices -> (inputs, targets)
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise ConfigError("the training split is empty; add examples")
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return self.indices[np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))]

    def next_indices(self) -> np.ndarray:
        picked = []
        while len(picked) < self.batch_size:
            take = self._order[self.position:self.position + self.batch_size - len(picked)]
            picked.extend(take.tolist())
            self.position += len(take)
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
        return np.array(picked, dtype=np.int64)

    def next_batch(self) -> tuple:
        return self.make_batch(self.next_indices())

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


def _eval_batches(indices, batch_size: int, limit: int | None):
    indices = np.asarray(indices, dtype=np.int64)
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return chunks if limit is None else chunks[:limit]


@no_grad()
def evaluate_classifier(model: SequenceClassifier, make_batch, indices, batch_size: int,
                        max_batches: int | None = None) -> dict:
    """Mean loss and accuracy over `indices` (in order; at most max_batches batches)."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for chunk in _eval_batches(indices, batch_size, max_batches):
        batch, labels = make_batch(chunk)
        logits, loss = model(batch, labels)
        predicted = backend.to_numpy(logits.data.argmax(axis=-1))
        total_loss += float(loss.item()) * len(chunk)
        correct += int((predicted == labels).sum())
        count += len(chunk)
    model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "examples": 0}
    return {"loss": total_loss / count, "accuracy": correct / count, "examples": count}


@no_grad()
def evaluate_instruct(model: GPT, make_batch, indices, batch_size: int, max_batches: int | None = None) -> dict:
    """Masked loss per response token over `indices` (in order; at most max_batches batches)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for chunk in _eval_batches(indices, batch_size, max_batches):
        inputs, targets = make_batch(chunk)
        n = int((targets != IGNORE_INDEX).sum())
        _, loss = model(inputs, targets)
        total += float(loss.item()) * n
        tokens += n
    model.train(was_training)
    return {"loss": total / tokens if tokens else float("nan"), "tokens": tokens}


# =====================================================================================
# ---- configuration, base models, freezing ---------------------------------------------
# =====================================================================================


@dataclass(frozen=True)
class FinetuneConfig:
    """What to finetune on and how; the optimisation settings are a tinyllm.train.TrainConfig."""

    task: str                          # "classify" or "instruct"
    init_from: str                     # a tinyllm checkpoint / run directory, or a Hugging Face directory
    data: str                          # .csv / .tsv / .jsonl (classify); .json / .jsonl (instruct)
    tokenizer: str | None = None       # a tokenizer file; None = the one that comes with init_from
    # classification
    text_field: str = "text"
    label_field: str = "label"
    labels: tuple | None = None        # the allowed labels in class order; None = sorted labels found
    pooling: str = "last"              # "last" (last real token) or "mean" (over real tokens)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # instruction following
    template: str = "alpaca"           # a template name or a JSON file
    # which weights train
    freeze: str = "none"               # none | all | all-but-last:N | prefixes (see the module docstring)
    lora_rank: int = 0                 # 0 = no LoRA; > 0 = LoRA adapters of this rank
    lora_alpha: float = 16.0
    lora_targets: tuple = ("attn",)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task!r}: use one of {', '.join(TASKS)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"--pooling {self.pooling!r}: use one of {', '.join(POOLINGS)}")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ConfigError(f"--lora-rank {self.lora_rank!r}: must be 0 (no LoRA) or a positive integer")
        if not (isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0):
            raise ConfigError(f"--lora-alpha {self.lora_alpha!r}: must be positive (often 2 x rank)")
        if self.lora_rank and self.freeze not in ("none", "all"):
            raise ConfigError(f"--freeze {self.freeze!r} with --lora-rank: LoRA freezes the whole base model; "
                              "drop --freeze")
        for name in ("labels", "lora_targets"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @property
    def lora(self) -> LoRAConfig | None:
        if not self.lora_rank:
            return None
        return LoRAConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=self.lora_targets)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["labels"] = list(self.labels) if self.labels is not None else None
        values["lora_targets"] = list(self.lora_targets)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneConfig":
        unknown = unknown_fields(cls, values)
        if unknown:
            raise ConfigError(f"unknown finetune setting(s) {', '.join(unknown)}")
        return cls(**values)


def load_base_model(init_from, dtype="float32", device: str = "cpu", tokenizer_file: str | None = None):
    """(GPT, tokenizer) from a tinyllm checkpoint / run directory or a Hugging Face directory.

    A Hugging Face GPT-2 directory brings its tokenizer as vocab.json + merges.txt (or
    encoder.json + vocab.bpe); otherwise pass `tokenizer_file`.
    """
    from .tokenizer import BPETokenizer, load_tokenizer  # noqa: PLC0415
    path = Path(init_from)
    if not path.exists():
        raise ConfigError(f"--init-from {init_from}: no such directory; give a run directory of `tinyllm train`, "
                          "one of its checkpoints, or a Hugging Face model directory (config.json + model.safetensors)")
    tokenizer = load_tokenizer(tokenizer_file) if tokenizer_file else None
    if (path / ckpt.STATE_FILE).is_file() or (path / "last" / ckpt.STATE_FILE).is_file():
        checkpoint = ckpt.load_checkpoint(path, with_optimizer=False)
        try:
            config = GPTConfig.from_dict(checkpoint.state["model_config"])
        except (KeyError, TypeError, ValueError) as error:
            raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: model_config is unusable ({error})") from None
        if "finetune" in checkpoint.state:
            raise ConfigError(f"--init-from {init_from}: is a finetuned checkpoint; finetune from its base model "
                              f"({checkpoint.state['finetune'].get('init_from')}) instead")
        model = GPT(config, dtype=dtype, device=device)
        ckpt.load_model_state(model, checkpoint)
        return model, tokenizer if tokenizer is not None else checkpoint.tokenizer()
    if (path / "config.json").is_file():
        model = GPT.from_pretrained(path, dtype=dtype, device=device)
        if tokenizer is None:
            for encoder, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
                if (path / encoder).is_file() and (path / merges).is_file():
                    tokenizer = BPETokenizer.from_gpt2_files(path / encoder, path / merges)
                    break
        if tokenizer is None:
            raise ConfigError(f"--init-from {init_from}: no tokenizer found (vocab.json + merges.txt); pass --tokenizer FILE")
        return model, tokenizer
    raise ConfigError(f"--init-from {init_from}: neither a tinyllm checkpoint (state.json) nor a Hugging Face "
                      "directory (config.json)")


def frozen_names(model: GPT, spec: str) -> list:
    """Names of the GPT's parameters that `spec` freezes (see the module docstring)."""
    names = [name for name, _ in model.named_parameters()]
    spec = (spec or "none").strip()
    if spec == "none":
        return []
    if spec == "all":
        return names
    if spec.startswith("all-but-last:"):
        try:
            keep = int(spec.partition(":")[2])
        except ValueError:
            keep = -1
        n_layer = model.config.n_layer
        if not 0 <= keep <= n_layer:
            raise ConfigError(f"--freeze {spec!r}: N must be an integer from 0 to n_layer={n_layer}")
        trained_blocks = {f"blocks.{i}." for i in range(n_layer - keep, n_layer)}
        trained_tail = ("norm_f.", "lm_head.")
        return [n for n in names if not n.startswith(tuple(trained_blocks) + trained_tail)]
    picked = []
    for prefix in (p.strip() for p in spec.split(",") if p.strip()):
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ConfigError(f"--freeze {spec!r}: {prefix!r} names no parameter; use none, all, all-but-last:N "
                              "or name prefixes such as wte,wpe,blocks.0")
        picked.extend(h for h in hits if h not in picked)
    return picked


def prepare_model(gpt: GPT, config: FinetuneConfig, num_classes: int | None = None, seed: int = 0):
    """Freeze, add LoRA adapters and (for classify) the head, in that order: the trainable
    parameters and their initial values follow from the config and seed alone."""
    lora = config.lora
    if lora is not None:
        apply_lora(gpt, dataclasses.replace(lora, seed=seed))
    else:
        freeze(gpt, set(frozen_names(gpt, config.freeze)))
    model = gpt if config.task == "instruct" else SequenceClassifier(gpt, num_classes, config.pooling, seed=seed)
    if not trainable_parameters(model):
        raise ConfigError(f"--freeze {config.freeze!r} leaves nothing to train; freeze less (or use --lora-rank)")
    return model


def frozen_fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every frozen parameter."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            digest.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            digest.update(np.ascontiguousarray(backend.to_numpy(p.data)).data)
    return digest.hexdigest()


# =====================================================================================
# ---- the training run: tinyllm.train.Trainer with our batches, evaluation and state ----
# =====================================================================================


class _TrainableWeights:
    """What ckpt.save_checkpoint needs of a model (state_dict), restricted to what trains."""

    def __init__(self, model: nn.Module):
        self.model = model

    def state_dict(self) -> dict:
        return {name: p.data.copy() for name, p in trainable_parameters(self.model)}


class FinetuneTrainer(Trainer):
    """tinyllm.train.Trainer with example batches instead of token windows.

    The step, clipping, optimizer, schedule, progress, metrics.jsonl, signals and exact
    resume are the Trainer's; this adapter replaces the batch source, the evaluation
    (loss, plus accuracy for classify, over the val split), and what a checkpoint holds
    (the trainable parameters, plus the finetune settings).
    """

    def __init__(self, train_config: TrainConfig, finetune_config: FinetuneConfig, model, optimizer, task_data: dict,
                 *, tokenizer, run_dir, progress_stream=None):
        # Trainer builds a token-window sampler from train_tokens; give it a minimal array, then replace it.
        placeholder = np.zeros(model.config.block_size + 2, dtype=np.int64)
        super().__init__(train_config, model, optimizer, placeholder, placeholder, tokenizer=tokenizer,
                         run_dir=run_dir, progress_stream=progress_stream)
        self.finetune_config = finetune_config
        self.task_data = task_data
        self.make_batch = task_data["make_batch"]
        self.splits = task_data["splits"]
        self.sampler = ExampleBatches(self.make_batch, self.splits["train"], train_config.batch_size, train_config.seed)
        self.last_metrics = {}

    def checkpoint_state(self, train_loss=None, val_loss=None) -> dict:
        state = super().checkpoint_state(train_loss, val_loss)
        state["finetune"] = {"config": self.finetune_config.to_dict(), **self.task_data["meta"],
                             "frozen_sha256": self.task_data["frozen_sha256"]}
        return state

    def save(self, best: bool = False, train_loss=None, val_loss=None):
        if self.run_dir is None or not self.is_writer:
            return None
        path = ckpt.save_checkpoint(self.run_dir, model=_TrainableWeights(self.model), optimizer=self.optimizer,
                                    tokenizer=self.tokenizer, state=self.checkpoint_state(train_loss, val_loss),
                                    best=best)
        self.last_checkpoint = str(path)
        return path

    def restore(self, checkpoint) -> None:
        check_finetune_state(checkpoint, self.finetune_config, self.task_data)
        full = dict(self.model.state_dict())
        full.update(checkpoint.model_state)
        super().restore(dataclasses.replace(checkpoint, model_state=full))

    def evaluate(self) -> dict:
        cfg = self.config
        evaluate_split = evaluate_classifier if self.finetune_config.task == "classify" else evaluate_instruct
        results = {}
        for split in ("train", "val"):
            indices = self.splits[split] if len(self.splits[split]) else self.splits["train"]
            results[split] = evaluate_split(self.model, self.make_batch, indices, cfg.batch_size, cfg.eval_iters)
        self.last_metrics = results
        return {"train": results["train"]["loss"], "val": results["val"]["loss"]}

    def _evaluate_and_log(self, progress, metrics, lr, save: bool, train_loss=None) -> dict:
        losses = super()._evaluate_and_log(progress, metrics, lr, save, train_loss)
        if self.finetune_config.task == "classify":
            train_acc, val_acc = self.last_metrics["train"]["accuracy"], self.last_metrics["val"]["accuracy"]
            progress.message(f"step {self.step}: train accuracy {train_acc:.4f}, val accuracy {val_acc:.4f}")
            self._write_metrics({"step": self.step, "val_loss": losses["val"], "val_accuracy": val_acc,
                                 "eval_train_loss": losses["train"], "train_accuracy": train_acc})
        return losses

    def _write_metrics(self, record: dict) -> None:
        if self.run_dir is not None and self.is_writer:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def check_finetune_state(checkpoint, config: FinetuneConfig, task_data: dict) -> None:
    """The checkpoint was made by this finetuning setup on this base model, or a CheckpointError."""
    saved = checkpoint.state.get("finetune")
    where = checkpoint.path / ckpt.STATE_FILE
    if saved is None:
        raise ckpt.CheckpointError(f"{where}: not a finetuning checkpoint")
    now = config.to_dict()
    diffs = [f"{k}: checkpoint {v!r}, now {now.get(k)!r}" for k, v in saved["config"].items()
             if k != "init_from" and now.get(k) != v]
    if diffs:
        raise ckpt.CheckpointError(f"{where}: made with other finetuning settings ({'; '.join(diffs)}); "
                                   "resume with the same flags")
    if saved.get("frozen_sha256") != task_data["frozen_sha256"]:
        raise ckpt.CheckpointError(f"{where}: the frozen base weights differ from those the checkpoint was trained "
                                   f"on (init_from {saved['config'].get('init_from')}); use the same base model")


def build_task_data(config: FinetuneConfig, tokenizer, block_size: int, seed: int) -> dict:
    """Read, tokenize and split the data; returns make_batch, the splits and what a checkpoint records."""
    pad_id = pad_id_for(tokenizer)
    if config.task == "classify":
        data = load_classification_data(config.data, config.text_field, config.label_field, config.labels)
        sequences = encode_texts(tokenizer, data, block_size)
        train, val, test = split_indices(len(sequences), config.val_fraction, config.test_fraction, seed)

        def make_batch(indices):
            return pad_sequences([sequences[i] for i in indices], pad_id), data.labels[indices]

        meta = {"label_names": list(data.label_names), "pad_id": pad_id, "num_examples": len(sequences)}
        return {"make_batch": make_batch, "splits": {"train": train, "val": val, "test": test}, "meta": meta,
                "label_names": data.label_names}
    template = load_template(config.template)
    records = load_instruction_data(config.data)
    examples = [encode_instruction(tokenizer, template, record, block_size, config.data, number)
                for number, record in records]
    train, val, test = split_indices(len(examples), config.val_fraction, config.test_fraction, seed)

    def make_batch(indices):
        return instruction_batch([examples[i] for i in indices], pad_id)

    meta = {"template": template.to_dict(), "pad_id": pad_id, "num_examples": len(examples)}
    return {"make_batch": make_batch, "splits": {"train": train, "val": val, "test": test}, "meta": meta}


def build_finetune(config: FinetuneConfig, train_config: TrainConfig, progress_stream=None, log=None) -> FinetuneTrainer:
    """Base model, data, trainable parameters, optimizer and trainer (restored from <out>/last on resume)."""
    import sys  # noqa: PLC0415
    log = log or (lambda message: print(message, file=progress_stream or sys.stderr, flush=True))
    train_config = train_config.replace(data=str(config.data))  # what `tinyllm info` shows as the data
    run_dir = Path(train_config.out)
    checkpoint = resume_checkpoint(train_config)
    gpt, tokenizer = load_base_model(config.init_from, train_config.dtype, train_config.device, config.tokenizer)
    if tokenizer.vocab_size > gpt.config.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                          f"{gpt.config.vocab_size}; use the tokenizer the model was trained with")
    task_data = build_task_data(config, tokenizer, gpt.config.block_size, train_config.seed)
    num_classes = len(task_data["label_names"]) if config.task == "classify" else None
    model = prepare_model(gpt, config, num_classes, seed=train_config.seed)
    task_data["frozen_sha256"] = frozen_fingerprint(model)
    optimizer = make_optimizer(train_config, trainable_parameters(model))
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = FinetuneTrainer(train_config, config, model, optimizer, task_data, tokenizer=tokenizer,
                              run_dir=run_dir, progress_stream=progress_stream)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        log(f"resuming {run_dir} from {checkpoint.path} at step {trainer.step}")
    io.write_json(run_dir / "config.json", {"train": train_config.to_dict(), "finetune": config.to_dict(),
                                           "model": gpt.config.to_dict()})
    n_train = sum(int(p.size) for _, p in trainable_parameters(model))
    splits = task_data["splits"]
    log(f"finetune {config.task}: {n_train:,} of {model.num_parameters():,} parameters train"
        f"{f' (LoRA rank {config.lora_rank} on {len(lora_layers(model))} layers)' if config.lora_rank else ''}; "
        f"{len(splits['train'])} train / {len(splits['val'])} val / {len(splits['test'])} test examples; "
        f"run directory {run_dir}")
    return trainer


@dataclass
class FinetuneResult:
    status: str
    step: int
    train_losses: list
    last_eval: dict | None
    test: dict | None             # classify: {"loss", "accuracy", "examples"}; instruct: {"loss", "tokens"}
    run_dir: str


def finetune(config: FinetuneConfig, train_config: TrainConfig, progress_stream=None,
             stop_at: int | None = None) -> FinetuneResult:
    """Build the run and train it; then report the test split and, with LoRA, write DIR/adapter/."""
    trainer = build_finetune(config, train_config, progress_stream=progress_stream)
    run = trainer.run(stop_at=stop_at)
    test = None
    if run.status == "finished" and trainer.step >= train_config.max_iters:
        test_indices = trainer.splits["test"]
        if len(test_indices):
            evaluate_split = evaluate_classifier if config.task == "classify" else evaluate_instruct
            test = evaluate_split(trainer.model, trainer.make_batch, test_indices, train_config.batch_size)
            summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in test.items())
            message = f"test: {summary}"
            if train_config.progress != "none":
                import sys  # noqa: PLC0415
                print(message, file=progress_stream or sys.stderr, flush=True)
            trainer._write_metrics({"step": trainer.step, **{f"test_{k}": v for k, v in test.items()}})
        if config.lora_rank:
            save_lora(trainer.model if config.task == "instruct" else trainer.model.gpt,
                      Path(train_config.out) / "adapter",
                      extra={"init_from": str(config.init_from), "task": config.task})
    return FinetuneResult(run.status, trainer.step, run.train_losses, run.last_eval, test, str(train_config.out))


# =====================================================================================
# ---- loading a finetuned checkpoint ----------------------------------------------------
# =====================================================================================


@dataclass
class Finetuned:
    """A finetuned model ready for inference, with what it needs to read its inputs."""

    model: nn.Module              # SequenceClassifier (classify) or GPT (instruct)
    tokenizer: object
    config: FinetuneConfig
    label_names: tuple | None
    template: PromptTemplate | None
    pad_id: int
    checkpoint: ckpt.Checkpoint


def is_finetune_checkpoint(path) -> bool:
    try:
        return "finetune" in ckpt.read_state(path)
    except ckpt.CheckpointError:
        return False


def load_finetuned(path, device: str = "cpu", dtype: str | None = None) -> Finetuned:
    """Rebuild a finetuned model from its checkpoint: the base from init_from, then the trained weights."""
    checkpoint = ckpt.load_checkpoint(path, with_optimizer=False)
    saved = checkpoint.state.get("finetune")
    if saved is None:
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: not a finetuning checkpoint "
                                   "(made by `tinyllm train`?); `tinyllm finetune` writes these")
    config = FinetuneConfig.from_dict(saved["config"])
    train_config = checkpoint.state.get("train_config", {})
    dtype = dtype or train_config.get("dtype", "float32")
    gpt, _ = load_base_model(config.init_from, dtype, device, config.tokenizer)
    label_names = tuple(saved["label_names"]) if config.task == "classify" else None
    model = prepare_model(gpt, config, len(label_names) if label_names else None, seed=int(train_config.get("seed", 0)))
    if frozen_fingerprint(model) != saved.get("frozen_sha256"):
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: the base model at {config.init_from} is not "
                                   "the one this checkpoint was finetuned from (its frozen weights differ)")
    full = dict(model.state_dict())
    full.update(checkpoint.model_state)
    ckpt.load_model_state(model, dataclasses.replace(checkpoint, model_state=full))
    model.eval()
    template = PromptTemplate(**saved["template"]) if config.task == "instruct" else None
    return Finetuned(model, checkpoint.tokenizer(), config, label_names, template, int(saved["pad_id"]), checkpoint)


@no_grad()
def classify_texts(finetuned: Finetuned, texts) -> np.ndarray:
    """Class probabilities (N, K) for each text, with the finetuned classifier."""
    if finetuned.config.task != "classify":
        raise ConfigError(f"{finetuned.checkpoint.path}: finetuned for {finetuned.config.task!r}, not classification")
    block_size = finetuned.model.config.block_size
    sequences = []
    for i, text in enumerate(texts, start=1):
        if not text.strip():
            raise ConfigError(f"text {i} is empty; give the text to classify")
        ids = encode_record(finetuned.tokenizer, text, "input", i)[:block_size]
        sequences.append(ids if ids else [finetuned.pad_id])
    logits, _ = finetuned.model(pad_sequences(sequences, finetuned.pad_id))
    probs = F.softmax(logits, axis=-1).data
    return backend.to_numpy(probs).astype(np.float64)

