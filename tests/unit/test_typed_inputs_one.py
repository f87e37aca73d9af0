"""A served request's one-row encoding equals the batch path's row, bit for bit.

:meth:`TypedInputs.encode` of one event with one category looks the key up and checks the
numbers in Python; the same event inside a batch goes through the array path. Learned keys,
keys predicted with their bucket, the missing key and missing (imputed) numbers.
"""

from __future__ import annotations

import numpy as np

from learnd.daemon.config_schema import MISSING_KEY, FeatureLayout, FeatureSpec
from learnd.daemon.learning.vocabulary import Vocabulary
from learnd.daemon.serving.typed_inputs import TypedInputs

LAYOUT = FeatureLayout.of(
    {
        "x": FeatureSpec(type="number", missing="impute"),
        "y": FeatureSpec(type="number", missing="impute"),
        "c": FeatureSpec(type="category", vocabulary=3, buckets=5),
    }
)


def inputs() -> TypedInputs:
    vocab = Vocabulary(LAYOUT)
    vocab.rows(np.array([[11.0], [4.0], [90.0]], np.float32), add=True)
    rng = np.random.default_rng(3)
    table = rng.normal(size=(LAYOUT.n_rows, 4)).astype(np.float32)
    return TypedInputs(LAYOUT, vocab, table)


def test_one_row_equals_its_row_of_a_batch() -> None:
    t = inputs()
    x_mean = np.array([0.25, 0.1, -1.5, 0.2, 0, 0, 0, 0], np.float32)
    rows = np.array(  # x, x missing, y, y missing, the category's key
        [
            [1.0, 0.0, 2.0, 0.0, 11.0],  # learned: row 1 + 0
            [0.5, 0.0, -3.0, 0.0, 90.0],  # learned: row 1 + 2
            [np.nan, 1.0, 2.0, 0.0, 7.0],  # not learned: its bucket; x imputed
            [1.0, 0.0, np.nan, 1.0, MISSING_KEY],  # the missing key's row; y imputed
            [np.nan, 1.0, np.nan, 1.0, 123456.0],
        ],
        np.float32,
    )
    batch = t.encode(rows, x_mean)
    for i in range(len(rows)):
        one = t.encode(rows[i : i + 1], x_mean)
        assert one.shape == (1, 8) and one.dtype == np.float32
        assert one.tobytes() == batch[i : i + 1].tobytes()
    assert batch[0, 4:].tolist() == t.table[1].tolist()
    assert batch[2, :4].tolist() == [0.25, 1.0, 2.0, 0.0]
    assert batch[2, 4:].tolist() == t.table[1 + 3 + 7 % 5].tolist()
    assert batch[3, 4:].tolist() == t.table[0].tolist()


def test_row_list_equals_rows() -> None:
    vocab = inputs().vocabulary
    keys = [11.0, 4.0, 8.0, MISSING_KEY, 90.0, 2.0**23]
    K = np.array(keys, np.float32).reshape(-1, 1)
    assert [vocab.row_list([k])[0] for k in K[:, 0].tolist()] == vocab.rows(K, add=False)[
        :, 0
    ].tolist()
    assert vocab.row_list([11.0]) == [1] and vocab.row_list([8.0]) == [1 + 3 + 8 % 5]


def test_has_room_until_the_vocabulary_is_full() -> None:
    vocab = Vocabulary(LAYOUT)
    assert vocab.has_room()
    K = np.array([[1.0], [2.0]], np.float32)
    vocab.rows(K, add=True)
    assert vocab.has_room()
    vocab.rows(np.array([[3.0]], np.float32), add=True)
    assert not vocab.has_room()
    K = np.array([[9.0], [3.0]], np.float32)
    assert vocab.rows(K, add=True).tolist() == vocab.rows(K, add=False).tolist()
