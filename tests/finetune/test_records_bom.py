"""A data file that starts with a UTF-8 byte-order mark (what spreadsheet
programs write) reads as the same file without it."""
import pytest

from tinyllm.finetune import load_classification_data, load_instruction_data

ROWS = [("what a great film", "pos"), ("an awful plot", "neg")] * 2


@pytest.mark.parametrize("name, text", [
    ("reviews.csv", "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in ROWS)),
    ("reviews.tsv", "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in ROWS)),
    ("reviews.jsonl", "".join(f'{{"text": "{t}", "label": "{lab}"}}\n' for t, lab in ROWS)),
    ("reviews.json", "[" + ", ".join(f'{{"text": "{t}", "label": "{lab}"}}' for t, lab in ROWS) + "]"),
], ids=["csv", "tsv", "jsonl", "json"])
def test_a_byte_order_mark_is_not_part_of_the_first_field(name, text, tmp_path):
    plain, marked = tmp_path / name, tmp_path / f"bom-{name}"
    plain.write_text(text, encoding="utf-8")
    marked.write_text(text, encoding="utf-8-sig")        # EF BB BF, then the text
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_classification_data(marked).texts == load_classification_data(plain).texts
    assert load_classification_data(marked).label_names == ("neg", "pos")


def test_instruction_records_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text('[{"instruction": "shout", "input": "abc", "output": "ABC"}]', encoding="utf-8-sig")
    assert load_instruction_data(path)[0][1].output == "ABC"
