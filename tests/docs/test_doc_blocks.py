"""The page runner itself: blocks run in order in one namespace, no-run blocks are skipped,
a failing block names its page and line, and a page's test_* functions are called."""
import pytest

from .doc_blocks import DocExampleError, python_blocks, run_page

PAGE = """# A page

```python
x = 2
```

```python no-run
this is not Python
```

```python
y = x * 21

def test_y():
    assert y == 42
```
"""


def test_blocks_run_in_order_in_one_namespace(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    assert [line for line, _ in python_blocks(page)] == [4, 12]
    assert run_page(page)["y"] == 42


def test_a_failing_block_names_its_page_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE.replace("y = x * 21", "y = x * 21\nassert y == 41"))
    with pytest.raises(DocExampleError, match=r"page\.md:12"):
        run_page(page)


def test_a_failing_test_function_on_the_page_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE.replace("assert y == 42", "assert y == 43"))
    with pytest.raises(DocExampleError, match="test_y"):
        run_page(page)
