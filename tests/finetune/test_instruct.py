"""Instruction finetuning: the template, the exact loss mask, a falling masked loss, bad records."""
import json

import numpy as np
import pytest

from autograd import Tensor
from autograd import functional as F
from tinyllm import GPT, GPTConfig
from tinyllm.finetune import (ALPACA, IGNORE_INDEX, FinetuneConfig, FinetuneDataError, InstructionExample,
                              InstructionRecord, encode_instruction, finetune, instruction_batch,
                              load_instruction_data, load_template)
from tinyllm.tokenizer import EOT_TOKEN, CharTokenizer
from tinyllm.fields import ConfigError
from tinyllm.settings import RunSettings

TOKENIZER = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .:#\n", special_tokens=[EOT_TOKEN])
TEMPLATE = load_template({"with_input": "i:{instruction}\nx:{input}\nr:", "without_input": "i:{instruction}\nr:"})


def test_alpaca_template_text():
    prompt = ALPACA.format("Name a colour.", "")
    assert prompt.startswith("Below is an instruction that describes a task. Write a response")
    assert prompt.endswith("### Instruction:\nName a colour.\n\n### Response:\n")
    with_input = ALPACA.format("Translate.", "bonjour")
    assert "paired with an input" in with_input and with_input.endswith("### Input:\nbonjour\n\n### Response:\n")


def test_batch_masks_prompt_and_padding_exactly():
    a = InstructionExample(ids=(1, 2, 3, 4, 5), n_prompt=3)      # prompt 1 2 3, response 4 5
    b = InstructionExample(ids=(6, 7, 8), n_prompt=2)            # prompt 6 7, response 8
    inputs, targets = instruction_batch([a, b], pad_id=0)
    assert inputs.tolist() == [[1, 2, 3, 4], [6, 7, 0, 0]]
    assert targets.tolist() == [[-100, -100, 4, 5], [-100, 8, -100, -100]]


def encoded(records, block_size=40):
    return [encode_instruction(TOKENIZER, TEMPLATE, r, block_size) for r in records]


def test_encoding_appends_end_of_text_and_counts_the_prompt():
    (example,) = encoded([InstructionRecord("shout", "abc", "ABC".lower())])
    prompt = TOKENIZER.encode("i:shout\nx:abc\nr:")
    assert example.n_prompt == len(prompt)
    assert list(example.ids) == prompt + TOKENIZER.encode("abc") + [TOKENIZER.eot_id]


def test_prompt_tokens_contribute_nothing_to_the_gradient():
    """The masked loss equals the mean loss over response targets only, with identical gradients,
    and the gradient reaching the logits of every prompt or padding position is exactly zero."""
    config = GPTConfig(vocab_size=TOKENIZER.vocab_size, block_size=40, n_layer=1, n_head=2, n_embd=8)
    records = [InstructionRecord("shout", "abc", "abc"), InstructionRecord("say hi", "", "hi there")]
    inputs, targets = instruction_batch(encoded(records), TOKENIZER.eot_id)
    response = targets != IGNORE_INDEX

    model = GPT(config, seed=0, dtype="float64")
    _, loss = model(inputs, targets)
    loss.backward()
    masked_grads = {n: p.grad.copy() for n, p in model.named_parameters()}

    # the same quantity written out by hand: per-position losses, summed over response positions
    reference = GPT(config, seed=0, dtype="float64")
    logits, _ = reference(inputs)
    full_targets = np.where(response, targets, 0)                    # any valid id at masked positions
    per_position = F.cross_entropy(logits, full_targets, reduction="none")   # (B, T)
    manual = (per_position * Tensor(response.astype(np.float64))).sum() / int(response.sum())
    manual.backward()
    assert abs(float(manual.item()) - float(loss.item())) < 1e-12
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(masked_grads[name], p.grad, rtol=0, atol=1e-12, err_msg=name)

    # dloss/dlogits is exactly zero wherever the target is masked
    leaf = Tensor(logits.data.copy(), requires_grad=True)
    F.cross_entropy(leaf, targets, ignore_index=IGNORE_INDEX).backward()
    assert np.all(leaf.grad[~response] == 0.0)
    assert np.all(np.abs(leaf.grad[response]).sum(axis=-1) > 0)


def test_changing_the_prompt_targets_changes_nothing():
    """Replace what the masked positions would predict (the prompt's next tokens) by other ids:
    with the mask, loss and gradients are bitwise the same."""
    config = GPTConfig(vocab_size=TOKENIZER.vocab_size, block_size=40, n_layer=1, n_head=2, n_embd=8)
    inputs, targets = instruction_batch(encoded([InstructionRecord("shout", "abc", "abc")]), TOKENIZER.eot_id)
    grads = []
    for fill in (1, 7):
        model = GPT(config, seed=0, dtype="float64")
        logits, _ = model(inputs)
        unmasked = np.where(targets == IGNORE_INDEX, fill, targets)
        mask = targets != IGNORE_INDEX
        per_position = F.cross_entropy(logits, np.where(mask, unmasked, IGNORE_INDEX), ignore_index=IGNORE_INDEX)
        per_position.backward()
        grads.append([p.grad.copy() for p in model.parameters()])
    assert all(np.array_equal(a, b) for a, b in zip(*grads))


def test_instruction_finetuning_lowers_the_masked_loss(make_base, copy_data, tmp_path):
    base = make_base(block_size=48)
    template = tmp_path / "short.json"
    template.write_text(json.dumps({"with_input": "{instruction}: {input}\n", "without_input": "{instruction}\n"}))
    config = FinetuneConfig(task="instruct", init_from=str(base), data=str(copy_data), val_fraction=0.2,
                            template=str(template),
                            test_fraction=0.0)
    train_config = RunSettings.of(out=str(tmp_path / "run"), max_iters=30, lr=3e-3, min_lr=1e-3, warmup_iters=3,
                                  batch_size=8, eval_interval=15, eval_iters=2, weight_decay=0.0, progress="none")
    result = finetune(config, train_config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert val[-1] < 0.7 * val[0], val
    assert result.train_losses[-1] < result.train_losses[0]


def test_threads_give_the_one_thread_numbers_of_the_masked_loss(make_base, write_jsonl, records, tmp_path):
    """Responses of 4 to 13 tokens: each thread's slice is weighted by the response tokens it counts,
    so 3 threads give one thread's losses (float64, to rounding), not a mean of per-slice means."""
    rows = records["copy"](24)
    for i, row in enumerate(rows):
        row["output"] = row["output"] * (1 + i % 4)
    data = write_jsonl(rows, "varied.jsonl")
    template = tmp_path / "short.json"
    template.write_text(json.dumps({"with_input": "{instruction}: {input}\n", "without_input": "{instruction}\n"}))
    config = FinetuneConfig(task="instruct", init_from=str(make_base(dtype="float64")), data=str(data),
                            template=str(template), val_fraction=0.25, test_fraction=0.0)
    runs = {threads: finetune(config, RunSettings.of(out=str(tmp_path / f"threads-{threads}"), max_iters=3,
                                                     eval_interval=3, eval_iters=2, batch_size=6, dtype="float64",
                                                     weight_decay=0.0, threads=threads, progress="none"))
            for threads in (1, 3)}
    np.testing.assert_allclose(runs[3].train_losses, runs[1].train_losses, rtol=1e-12)
    for split in ("train", "val"):
        assert runs[3].last_eval[split] == pytest.approx(runs[1].last_eval[split], rel=1e-12)


def test_custom_template_from_a_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "short", "with_input": "Q: {instruction} ({input})\nA: ",
                                "without_input": "Q: {instruction}\nA: "}))
    template = load_template(str(path))
    assert template.format("add", "1 2") == "Q: add (1 2)\nA: "
    assert template.format("hello") == "Q: hello\nA: "
    path.write_text(json.dumps({"with_input": "{instruction}", "without_input": "{instruction}"}))
    with pytest.raises(ConfigError, match=r"no \{input\} placeholder"):
        load_template(str(path))
    with pytest.raises(ConfigError, match="neither a known template"):
        load_template("no-such-template")


@pytest.mark.parametrize("name, text, message", [
    ("d.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', "record 2 has no 'output' field"),
    ("d.jsonl", '{"output": "b"}\n', "record 1 has no 'instruction' field"),
    ("d.json", '[{"instruction": "a", "output": "b"}, {"instruction": "a", "output": ""}]', "record 2: 'output' is empty"),
    ("d.json", '[{"instruction": "a", "output": "b", "input": 3}]', "record 1: 'input' is a int, not text"),
    ("d.csv", "instruction,output\na,b\n", "must be .json"),
    ("d.json", '{"instruction": "a", "output": "b"}', "not a list of records"),
])
def test_bad_instruction_data_names_file_and_record(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FinetuneDataError, match=message) as error:
        load_instruction_data(path)
    assert str(path) in str(error.value)


def test_a_prompt_longer_than_the_block_is_an_error_naming_the_record():
    record = InstructionRecord("a very long instruction " * 4, "", "ok")
    with pytest.raises(FinetuneDataError, match="d.jsonl: record 5: the prompt is"):
        encode_instruction(TOKENIZER, TEMPLATE, record, block_size=16, path="d.jsonl", number=5)
