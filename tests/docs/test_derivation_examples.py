"""Every page of docs/derivations/ runs: its worked example's "check it yourself" blocks execute
(doc_blocks.run_page: blocks in order, one namespace per page), so a wrong formula or a stale
number on a page fails here. Each derivation page must have such a block, and it must assert."""
import re
from pathlib import Path

import pytest

from .doc_blocks import python_blocks, run_page

DERIVATIONS = Path(__file__).resolve().parents[2] / "docs" / "derivations"
PAGES = sorted(DERIVATIONS.glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_derivation_page_examples_run(page):
    blocks = python_blocks(page)
    if page.name != "README.md":
        assert blocks, f"{page.name} has no ```python block: its worked example needs a check-it-yourself block"
        assert all(re.search(r"^\s*assert ", code, re.MULTILINE) for _, code in blocks), (
            f"{page.name}: a ```python block asserts nothing, so a wrong formula would still pass")
    run_page(page)


def test_every_page_is_listed_in_the_readme():
    readme = (DERIVATIONS / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"\]\(([a-z_]+\.md)\)", readme))
    assert listed == {page.name for page in PAGES if page.name != "README.md"}
