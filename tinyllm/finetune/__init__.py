"""Finetuning a pretrained GPT: text classification and instruction following, with or without LoRA.

    config = FinetuneConfig(task="classify", init_from="runs/pretrain", data="reviews.csv")
    settings = RunSettings.of(out="runs/clf", max_iters=200, lr=1e-3, batch_size=16)
    result = finetune(config, settings)           # the one assembly line, with the Finetuning recipe
    probs = classify_texts(load_finetuned("runs/clf"), ["what a great film"])

Classification (`task="classify"`): a CSV, TSV or JSONL of `text` and `label` (field names
configurable); a `SequenceClassifier` (the GPT's body, pooled hidden states, a new Linear
head) learns the labels; evaluations log loss and accuracy, the end of the run the test
accuracy. Instruction following (`task="instruct"`): JSON (a list) or JSONL of Alpaca
records {"instruction", "input" (optional), "output"}, prompt and response in a template,
the loss on the response tokens only.

The package, in the order a run uses it:

    records.py     reading CSV/TSV/JSON/JSONL records; errors name the file and record
    data.py        tokens: splits, padding, prompt templates, loss masks, TaskData, ExampleBatches
    classifier.py  SequenceClassifier
    config.py      FinetuneConfig, freezing, LoRA: the model to train
    tasks.py       FinetuneTask (a tinyllm.trainer task), Finetuning (the recipe), finetune
    loading.py     the base model (`init_from`), finetuned checkpoints, classify_texts

Left out: multi-label classification, regression heads, class weighting, chat templates
with several turns, packing several short examples into one sequence, early stopping.
"""
from .classifier import POOLINGS, SequenceClassifier, pooling_weights
from .config import TASKS, FinetuneConfig, frozen_fingerprint, frozen_names, prepare_model
from .data import (ALPACA, IGNORE_INDEX, TEMPLATES, ExampleBatches, InstructionExample, PaddedBatch, PromptTemplate,
                   TaskData, build_task_data, encode_instruction, encode_record, encode_texts, instruction_batch,
                   load_template, pad_id_for, pad_sequences, split_indices)
from .loading import Finetuned, classify_texts, is_finetune_checkpoint, load_base_model, load_finetuned
from .records import (DATA_FORMATS, ClassificationData, FinetuneDataError, InstructionRecord, data_format,
                      load_classification_data, load_instruction_data, read_records)
from .tasks import (FinetuneResult, FinetuneTask, Finetuning, check_finetune_state, evaluate_classifier,
                    evaluate_instruct, finetune)

__all__ = ["POOLINGS", "SequenceClassifier", "pooling_weights", "TASKS", "FinetuneConfig", "frozen_fingerprint",
           "frozen_names", "prepare_model", "ALPACA", "IGNORE_INDEX", "TEMPLATES", "ExampleBatches",
           "InstructionExample", "PaddedBatch", "PromptTemplate", "TaskData", "build_task_data", "encode_instruction",
           "encode_record", "encode_texts", "instruction_batch", "load_template", "pad_id_for", "pad_sequences",
           "split_indices", "Finetuned", "classify_texts", "is_finetune_checkpoint", "load_base_model",
           "load_finetuned", "DATA_FORMATS", "ClassificationData", "FinetuneDataError", "InstructionRecord",
           "data_format", "load_classification_data", "load_instruction_data", "read_records", "FinetuneResult",
           "FinetuneTask", "Finetuning", "check_finetune_state", "evaluate_classifier", "evaluate_instruct",
           "finetune"]
