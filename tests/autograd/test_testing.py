"""autograd.testing is enough for a user's own test file: its profiles load by name or from the
environment, the extreme-value strategy reaches the values careless numerics fail on, and the
complete example in its docstring runs (and catches the bugs it is meant to catch)."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, given, settings

import autograd.testing
from autograd.testing import PROFILES, extreme_arrays, extreme_values, load_profile

from ..docs.doc_blocks import python_blocks, run_page


@pytest.fixture
def restore_profile():
    yield
    load_profile()          # what tests/conftest.py loaded: the same function, the same environment


def test_load_profile_by_name_and_from_the_environment(monkeypatch, restore_profile):
    assert load_profile("dev") == "dev" and settings().max_examples == PROFILES["dev"]["max_examples"]
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "ci")
    assert load_profile() == "ci" and settings().max_examples == 25 and settings().derandomize
    monkeypatch.delenv("HYPOTHESIS_PROFILE")
    monkeypatch.setenv("CI", "1")
    assert load_profile() == "ci"
    monkeypatch.delenv("CI")
    assert load_profile() == "dev"
    with pytest.raises(ValueError, match="unknown hypothesis profile 'fast'"):
        load_profile("fast")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_values_reach_overflow_tiny_and_signed_zero(dtype):
    seen = set()

    @settings(max_examples=300, derandomize=True, database=None)
    @given(extreme_values(dtype))
    def collect(v):
        v = dtype(v)
        assert np.isfinite(v) and abs(v) <= 1e4
        if v != 0 and abs(v) < np.finfo(dtype).tiny:
            seen.add("subnormal")
        if abs(v) > np.log(np.finfo(dtype).max):
            seen.add("exp overflows")
        if v == 0 and np.signbit(v):
            seen.add("-0")
        if 0 < abs(v) < 10:
            seen.add("ordinary")
    collect()
    assert seen == {"subnormal", "exp overflows", "-0", "ordinary"}


@given(extreme_arrays((2, 3), dtype=np.float32, max_abs=100.0))
def test_extreme_arrays_have_the_shape_dtype_and_bound(a):
    assert a.shape == (2, 3) and a.dtype == np.float32 and np.all(np.abs(a) <= 100.0)


def docstring_page(tmp_path) -> Path:
    page = tmp_path / "testing_docstring.md"
    page.write_text(autograd.testing.__doc__)
    return page


def test_the_docstring_example_is_a_complete_test_file_that_passes(tmp_path, restore_profile):
    page = docstring_page(tmp_path)
    assert len(python_blocks(page)) == 1
    namespace = run_page(page)                            # runs the file, then calls its test_* functions
    assert {"test_logaddexp_backward", "test_logaddexp_is_finite_and_bounded_at_extremes"} <= set(namespace)


def test_the_docstring_example_catches_a_naive_logaddexp(tmp_path, monkeypatch, restore_profile):
    """Without the max shift, exp overflows at the extreme values: the example's property test fails.
    (Run under a profile of one's own, as a user may: no shrinking, which is slow and not tested here.)"""
    settings.register_profile("ci-no-shrink", parent=settings.get_profile("ci"),
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "ci-no-shrink")
    page = docstring_page(tmp_path)
    text = page.read_text()
    naive = text.replace("m = xp.maximum(a, b)", "m = xp.zeros_like(a)")
    assert naive != text
    page.write_text(naive)
    with np.errstate(all="ignore"), pytest.raises(AssertionError, match="test_logaddexp_is_finite_and_bounded"):
        run_page(page)


def _layout(a) -> str:
    if 0 in a.strides and a.size > 1:
        return "broadcast"
    if a.flags.c_contiguous:
        return "contiguous"
    return "transposed" if a.flags.f_contiguous else "strided"


@pytest.mark.parametrize("strategy", ["float_arrays", "extreme_arrays", "separated_arrays"])
def test_the_array_strategies_draw_non_contiguous_layouts_too(strategy):
    """Transposed, strided and broadcast arrays, not only C-contiguous ones (a backward right only for
    contiguous arrays used to pass the recipe's tests)."""
    import autograd.testing as testing
    draw = getattr(testing, strategy)
    seen = set()

    @settings(max_examples=120, derandomize=True, database=None)
    @given(draw((3, 4)))
    def collect(a):
        assert a.shape == (3, 4) and a.dtype == np.float64
        seen.add(_layout(a))
    collect()
    expected = {"contiguous", "transposed", "strided"} | ({"broadcast"} if strategy != "separated_arrays" else set())
    assert seen == expected


def test_with_layout_keeps_the_values_and_falls_back_where_a_layout_cannot_be():
    from autograd.testing import LAYOUTS, with_layout
    a = np.arange(12.0).reshape(3, 4)
    for layout in LAYOUTS[:3]:
        b = with_layout(a, layout)
        np.testing.assert_array_equal(b, a)
        assert _layout(b) == layout
    broadcast = with_layout(a, "broadcast")
    assert _layout(broadcast) == "broadcast" and not broadcast.flags.writeable
    np.testing.assert_array_equal(broadcast, np.broadcast_to(a[:1], (3, 4)))
    assert _layout(with_layout(np.arange(4.0), "transposed")) == "strided"     # one axis: no transpose
    assert _layout(with_layout(np.ones((1, 1)), "strided")) == "contiguous"    # one element
    with pytest.raises(ValueError, match="unknown layout 'diagonal'"):
        with_layout(a, "diagonal")
