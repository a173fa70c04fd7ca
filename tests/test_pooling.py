import numpy as np
import pytest

from gist_onnx.pooling import normalize, pool

pytestmark = pytest.mark.core

HIDDEN = np.array(
    [
        [[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]],  # last token is padding
        [[-1.0, -1.0], [-3.0, -5.0], [-2.0, 0.0]],
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 0], [1, 1, 1]], dtype=np.int64)


def test_cls_takes_the_first_token() -> None:
    np.testing.assert_array_equal(pool(HIDDEN, MASK, "cls"), [[1.0, 2.0], [-1.0, -1.0]])


def test_cls_takes_a_graph_that_returned_the_first_token_only() -> None:
    np.testing.assert_array_equal(pool(HIDDEN[:, :1], MASK, "cls"), [[1.0, 2.0], [-1.0, -1.0]])
    with pytest.raises(ValueError, match="expected token states"):
        pool(HIDDEN[:, :1], MASK, "mean")


def test_mean_ignores_padding() -> None:
    np.testing.assert_allclose(pool(HIDDEN, MASK, "mean"), [[2.0, -1.0], [-2.0, -2.0]])


def test_max_ignores_padding_even_when_real_states_are_negative() -> None:
    states = HIDDEN.copy()
    states[1] = [[-9.0, -9.0], [-7.0, -5.0], [-1.0, -1.0]]  # the padding token is the largest
    mask = np.array([[1, 1, 0], [1, 1, 0]])
    np.testing.assert_allclose(pool(states, mask, "max"), [[3.0, 2.0], [-7.0, -5.0]])


def test_unknown_mode_and_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="unknown pooling mode"):
        pool(HIDDEN, MASK, "weightedmean")
    with pytest.raises(ValueError, match="expected token states"):
        pool(HIDDEN[:1], MASK, "cls")


def test_normalize_gives_unit_rows_and_keeps_zero_rows_finite() -> None:
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
