"""Finetuning data in tokens: splits, padding, prompt templates, loss masks, batches.

    data = build_task_data(config, tokenizer, block_size=64, seed=0)     # TaskData: tokenized, split
    batch = data.batch(data.train[:8])       # classify: (PaddedBatch, labels); instruct: (inputs, targets)
    sampler = ExampleBatches(data.batch, data.train, batch_size=8, seed=0)

Classification: each text is tokenized, truncated to its first block_size tokens and padded
(on the right, with `pad_id`) to the longest text of its batch.

Instruction following: a `PromptTemplate` turns the instruction and input into a prompt; the
training sequence is prompt + output + end-of-text, and the targets of every position that
predicts a prompt token (or padding) are -100, which the cross-entropy ignores:

    tokens:   p0 p1 p2 | r0 r1 eot        (prompt | response)
    inputs:   p0 p1 p2 r0 r1
    targets: -100 -100 r0 r1 eot          (-100: ignored)

The examples are split once, by a seeded permutation, into train / val / test.

Left out: packing several short examples into one sequence, chat templates with several turns.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyllm.fields import ConfigError

from .records import (ClassificationData, FinetuneDataError, InstructionRecord, load_classification_data,
                      load_instruction_data)

IGNORE_INDEX = -100


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

    def __getitem__(self, rows: slice) -> "PaddedBatch":
        """Some of the rows (a slice of the batch, for threads), padded as the whole batch is."""
        return PaddedBatch(self.ids[rows], self.lengths[rows])


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
        epoch, position = state["epoch"], state["position"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, position)) \
                or epoch < 0 or not 0 <= position < len(self.indices):
            raise ValueError(f"the batch state {state!r} is not an epoch >= 0 and a position in "
                             f"[0, {len(self.indices)}) of the training split")
        self.epoch, self.position = epoch, position
        self._order = self._permutation(self.epoch)


@dataclass(frozen=True, eq=False)
class TaskData:
    """A finetuning data set, tokenized and split once: what a FinetuneTask draws its batches from."""

    task: str                               # "classify" or "instruct"
    examples: tuple                         # classify: token id lists; instruct: InstructionExamples
    pad_id: int
    train: np.ndarray                       # example indices of each split
    val: np.ndarray
    test: np.ndarray
    labels: np.ndarray | None = None        # classify: (N,) int64, the class of each example
    label_names: tuple | None = None        # classify: the class names, in class order
    template: PromptTemplate | None = None  # instruct: the prompt template

    def batch(self, indices) -> tuple:
        """classify: (PaddedBatch, labels (B,)); instruct: (inputs (B, T), targets (B, T))."""
        if self.task == "classify":
            return pad_sequences([self.examples[i] for i in indices], self.pad_id), self.labels[indices]
        return instruction_batch([self.examples[i] for i in indices], self.pad_id)

    def metadata(self) -> dict:
        """What a finetuning checkpoint records about the data (to classify or prompt without it)."""
        described = {"label_names": list(self.label_names)} if self.task == "classify" else \
            {"template": self.template.to_dict()}
        return {**described, "pad_id": self.pad_id, "num_examples": len(self.examples)}


def build_task_data(config, tokenizer, block_size: int, seed: int) -> TaskData:
    """Read, tokenize and split the data of a FinetuneConfig."""
    pad_id = pad_id_for(tokenizer)
    if config.task == "classify":
        data = load_classification_data(config.data, config.text_field, config.label_field, config.labels)
        sequences = encode_texts(tokenizer, data, block_size)
        train, val, test = split_indices(len(sequences), config.val_fraction, config.test_fraction, seed)
        return TaskData("classify", tuple(sequences), pad_id, train, val, test, labels=data.labels,
                        label_names=data.label_names)
    template = load_template(config.template)
    examples = tuple(encode_instruction(tokenizer, template, record, block_size, config.data, number)
                     for number, record in load_instruction_data(config.data))
    train, val, test = split_indices(len(examples), config.val_fraction, config.test_fraction, seed)
    return TaskData("instruct", examples, pad_id, train, val, test, template=template)
