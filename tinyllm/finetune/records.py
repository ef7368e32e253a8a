"""Reading finetuning records: CSV, TSV, JSON and JSONL files; every error names the file and record.

    for number, record in read_records("reviews.csv"): ...          # (record number, {field: value})
    data = load_classification_data("reviews.csv")                  # texts, integer labels, label names
    records = load_instruction_data("alpaca.json")                  # [(number, InstructionRecord)]

Record numbers count from 1: data rows of a CSV/TSV (after the header), objects of a JSON
list, non-blank lines of a JSONL file (errors also give the line). A UTF-8 byte-order mark at
the start (what spreadsheet programs write) is skipped.

Left out: other formats (Parquet, Arrow), streaming files larger than memory.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyllm.data import DataError
from tinyllm.limits import check_fits_in_memory

DATA_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}
RECORDS_MEMORY_FACTOR = 20  # bytes of memory per byte of file: its text, then Python objects of each record


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
    check_fits_in_memory(path.stat().st_size, RECORDS_MEMORY_FACTOR, str(path),
                         "use fewer records (the file is read whole)")
    try:
        text = path.read_text(encoding="utf-8-sig")   # a byte-order mark (spreadsheets write one) is not text
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
        label = record[label_field]
        if not isinstance(label, (str, int)):   # bool is an int; a list, object or float is not a class name
            raise FinetuneDataError(f"{path}: record {number}: the label {label!r} is a {type(label).__name__}; "
                                    "a label is a string, an integer or a boolean")
        raw_labels.append(str(label).strip())
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
