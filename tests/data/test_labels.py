"""The label codec: names or ids, ``|`` or spaces, errors naming the row."""

import numpy as np
import pandas as pd
import pytest

from labelaudit.core.errors import DatasetError, RunDirError
from labelaudit.data.labels import LabelCodec, parse_class_ids, split_labels


def test_split_both_separators_and_empty():
    assert split_labels("7|1| 2 |", "|") == ["7", "1", "2"]
    assert split_labels(" 7  1\t2 ", " ") == ["7", "1", "2"]
    assert split_labels("", "|") == []


def test_ids_round_trip_in_space_notation():
    codec = LabelCodec(["0", "1", "2", "3"], " ", ["a", "b", "c", "d"])
    row = codec.parse("3 1")
    assert row.tolist() == [False, True, False, True]
    assert codec.format(row) == "1 3"
    assert codec.parse("b d").tolist() == row.tolist()  # class names accepted too


def test_names_with_pipe_and_matrix():
    codec = LabelCodec(["cat", "dog"], "|", ["cat", "dog"])
    matrix = codec.parse_many(["dog|cat", "", "cat"])
    assert matrix.tolist() == [[True, True], [False, False], [True, False]]
    assert codec.format_many(matrix) == ["cat|dog", "", "cat"]


def test_unknown_token_names_the_row():
    codec = LabelCodec(["0", "1"], "|")
    with pytest.raises(DatasetError, match=r"line 3: unknown label 'x'"):
        codec.parse_many(["0", "1|x"])
    with pytest.raises(RunDirError, match=r"row 1: unknown label '7'"):
        codec.parse_many(["1", "7"], where=lambda i, m: RunDirError(f"row {i}: {m}"))
    assert codec.parse_many(["1|x"], lenient=True).tolist() == [[False, True]]
    assert codec.indices(float("nan")) == []


def test_from_info_and_class_ids():
    codec = LabelCodec.from_info(
        {"class_names": ["a", "b"], "class_tokens": ["0", "1"], "label_sep": " "}
    )
    assert (codec.tokens, codec.sep) == (["0", "1"], " ")
    for forged in (5, "ab", {"a": 1}, [["x"]]):  # read back: not a list of names is absent
        codec = LabelCodec.from_info({"class_names": ["a", "b"], "class_tokens": forged})
        assert codec.tokens == ["a", "b"]
        assert LabelCodec.from_info({"class_names": forged}).tokens == []
    assert parse_class_ids("1|0", "|", 2, ValueError) == [1, 0]
    with pytest.raises(ValueError, match="out of range"):
        parse_class_ids("2", "|", 2, ValueError)
    with pytest.raises(ValueError, match="no labels given"):
        parse_class_ids(" ", " ", 2, ValueError)


def test_rundir_parse_labels_keeps_its_behaviour():
    from labelaudit.rundir import parse_labels

    out = parse_labels(pd.Series(["0|2", None]), ["0", "1", "2"], "|")
    assert np.array_equal(out, [[True, False, True], [False, False, False]])
