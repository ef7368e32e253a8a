"""Keyed dropout masks (autograd/layers/dropout.py): the keep rate, independence of the key's parts, and
a row's mask that does not depend on which array (which slice of a batch) holds it."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from autograd import Tensor, backend
from autograd import functional as F
from autograd.gradcheck import check_backward
from autograd.layers.dropout import DropoutKey, keyed_scaled_mask, mix32

KEY = DropoutKey(seed=1337, step=7, site=3, row=0)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_the_keep_rate_is_one_minus_p_and_survivors_are_scaled(p):
    mask = keyed_scaled_mask(KEY, (64, 32, 50), np.float64, p)
    kept = mask > 0
    n = kept.size
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)     # five standard deviations
    np.testing.assert_array_equal(mask[kept], 1 / (1 - p))


def test_neighbouring_elements_rows_and_keys_are_uncorrelated():
    kept = keyed_scaled_mask(KEY, (256, 2048), np.float64, 0.5) > 0
    bound = 5 / np.sqrt(kept.size)
    assert abs(np.corrcoef(kept[:, :-1].ravel(), kept[:, 1:].ravel())[0, 1]) < bound   # along a row
    assert abs(np.corrcoef(kept[:-1].ravel(), kept[1:].ravel())[0, 1]) < bound         # between rows
    for other in (DropoutKey(1338, 7, 3), DropoutKey(1337, 8, 3), DropoutKey(1337, 7, 4),
                  DropoutKey(1337 + 2**32, 7, 3), DropoutKey(1337, 7 + 2**32, 3)):
        theirs = keyed_scaled_mask(other, (256, 2048), np.float64, 0.5) > 0
        assert abs(np.corrcoef(kept.ravel(), theirs.ravel())[0, 1]) < bound, other


@given(rows=st.integers(1, 9), cut=st.integers(0, 9), positions=st.integers(1, 7))
def test_a_row_has_its_mask_in_any_slice_of_the_batch(rows, cut, positions):
    """Rows a.. of a batch, masked as an array whose first row is batch row a, get the whole batch's masks;
    so do fewer positions of a row (every axis is mixed in by its own coordinate)."""
    cut = min(cut, rows - 1)
    shape = (rows, 2, positions, 3)
    whole = keyed_scaled_mask(KEY, shape, np.float32, 0.3)
    part = keyed_scaled_mask(DropoutKey(KEY.seed, KEY.step, KEY.site, row=cut), (rows - cut,) + shape[1:],
                             np.float32, 0.3)
    np.testing.assert_array_equal(part, whole[cut:])
    shorter = keyed_scaled_mask(KEY, (rows, 2, positions - 1, 3), np.float32, 0.3)
    np.testing.assert_array_equal(shorter, whole[:, :, :positions - 1])


def test_the_scalar_and_array_hashes_agree():
    values = np.random.default_rng(0).integers(0, 2**32, size=1000, dtype=np.uint64)
    from autograd.layers.dropout import _mix_  # noqa: PLC0415 - the array twin of mix32
    arrays = values.astype(np.uint32)
    _mix_(arrays, np.empty_like(arrays))
    assert arrays.tolist() == [mix32(int(v)) for v in values]


def test_a_key_as_the_generator_gives_the_same_mask_on_every_call_and_the_right_gradient():
    x = np.random.default_rng(1).standard_normal((3, 4, 5))
    first = F.dropout(Tensor(x), 0.4, generator=KEY).data
    np.testing.assert_array_equal(F.dropout(Tensor(x), 0.4, generator=KEY).data, first)
    np.testing.assert_allclose(first, x * keyed_scaled_mask(KEY, x.shape, np.float64, 0.4), rtol=0, atol=0)
    check_backward(lambda t: F.dropout(t, 0.4, generator=KEY), [x])


def test_every_device_draws_the_same_bits(device):
    """uint32 arithmetic through xp: the same mask on NumPy and CuPy (or its CPU stand-in)."""
    mask = keyed_scaled_mask(KEY, (5, 3, 17, 17), np.float32, 0.2)
    on_device = keyed_scaled_mask(KEY, (5, 3, 17, 17), np.float32, 0.2, backend.module_for(device))
    np.testing.assert_array_equal(backend.to_numpy(on_device), mask)
