"""Run the Python code blocks of a documentation page, so the page cannot drift from the code.

A page's fenced blocks tagged ```python run in order in one namespace (a page reads as one
session: later blocks use what earlier ones defined); a block tagged ```python no-run is
shown but not run (output samples, shell-like sketches). After the blocks, every
`test_*` function the page defined is called with no arguments, so a page can show a
complete test file and have it run too.

    from .doc_blocks import run_page             # in a test beside it (tests/ is a package)
    run_page(Path("docs/writing-ops.md"))     # raises with the page and line of a failing block
"""
from __future__ import annotations

import re
import traceback
from pathlib import Path

FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list:
    """[(line number of the block's first code line, code)] for every block that runs."""
    text = Path(path).read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if "no-run" in match.group(1):
            continue
        line = text.count("\n", 0, match.start(2)) + 1
        blocks.append((line, match.group(2)))
    return blocks


class DocExampleError(AssertionError):
    """A code block of a documentation page failed; the message names the page and line."""


def run_page(path: Path) -> dict:
    """Run every runnable block of `path` in one namespace, then its test_* functions."""
    path = Path(path)
    namespace = {"__name__": f"doc_{path.stem.replace('-', '_')}"}
    for line, code in python_blocks(path):
        try:
            exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)  # noqa: S102
        except Exception as error:  # noqa: BLE001 - report any failure with its place in the page
            raise DocExampleError(f"{path}:{line}: the block starting here failed: {error!r}\n"
                                  + traceback.format_exc(limit=-3)) from error
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            try:
                value()
            except Exception as error:  # noqa: BLE001
                raise DocExampleError(f"{path}: {name}() defined on the page failed: {error!r}") from error
    return namespace
