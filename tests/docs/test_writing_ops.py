"""docs/writing-ops.md runs: its Python blocks in order in one namespace, then the test_*
functions it defines (a complete hypothesis test file, run under the ci profile's bounds)."""
import sys
from pathlib import Path

from .doc_blocks import run_page

from autograd.testing import load_profile

PAGE = Path(__file__).resolve().parents[2] / "docs" / "writing-ops.md"


def test_writing_ops_page_runs():
    try:
        namespace = run_page(PAGE)
    finally:
        load_profile()          # the page loads a profile too: leave the one tests/conftest.py chose
        sys.modules.pop("my_ops", None)   # the page's stand-in for a module of the user's ops
    tests = {name for name in namespace if name.startswith("test_")}
    assert {"test_softplus_backward", "test_scaled_softplus_backward_broadcasts_either_way",
            "test_softplus_at_extreme_values", "test_softplus_at_extreme_values_in_float32"} <= tests
