"""The readers of predictions made elsewhere (``labelaudit/pipeline/supplied.py``):
messages name the line of the file as it is written."""

from __future__ import annotations

import pytest

from labelaudit.core.errors import SettingsError
from labelaudit.pipeline.supplied import read_supplied_cells, read_supplied_probs

IDS, NAMES, TOKENS = ["a", "b", "c"], ["Nucleoli", "Cytosol"], ["0", "1"]


def test_a_bad_value_is_named_at_its_line_past_blank_lines(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,Nucleoli,Cytosol\n\n\na,0.1,0.2\n\nb,0.3,0.4\nc,0.5,1.0000000001\n")
    with pytest.raises(SettingsError) as err:
        read_supplied_probs(path, IDS, NAMES, TOKENS)
    message = str(err.value)
    assert f"{path}, line 7: image 'c'" in message  # not line 5 (the row's position + 2)
    assert "1.0000000001 is outside [0, 1]" in message  # never rounded into range
    path.write_text("id,Nucleoli,Cytosol\n\na,0.1,0.2\nb,0.3,0.4\n\nz,0.5,0.6\nc,0.1,0.1\n")
    with pytest.raises(SettingsError, match="line 6: image id 'z' is not in the dataset"):
        read_supplied_probs(path, IDS, NAMES, TOKENS)


def test_a_cell_name_quoted_over_lines_counts_its_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,cell,0,1\na,"c\n1",0.1,0.2\n\nb,c2,0.3,x\n')
    with pytest.raises(SettingsError, match=r"line 5: column 'Cytosol': 'x' is not a number"):
        read_supplied_cells(path, IDS, NAMES, TOKENS)
    path.write_text("id,cell,0,1\r\n\r\na,c1,0.1,0.2\r\na,c1,0.3,0.4\r\n")  # CRLF too
    with pytest.raises(SettingsError, match="line 4: cell 'c1' of image 'a' appears twice"):
        read_supplied_cells(path, IDS, NAMES, TOKENS)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("id,Nucleoli,Cytosol\n\na,0.1,0.2\nb,0.3,0.4\n \nc,0.5,1.5\n \n", 6),  # spaces only
        ("\n\nid,Nucleoli,Cytosol\na,0.1,0.2\nb,0.3,0.4\nc,0.5,1.5\n", 6),  # before the header
        ("id,Nucleoli,Cytosol\r\n\r\na,0.1,0.2\r\nb,0.3,0.4\r\nc,0.5,1.5\r\n", 5),
    ],
)
def test_lines_are_counted_where_pandas_skips_lines(tmp_path, text, line):
    path = tmp_path / "p.csv"
    path.write_text(text, newline="")
    with pytest.raises(SettingsError, match=f"line {line}: image 'c'"):
        read_supplied_probs(path, IDS, NAMES, TOKENS)


@pytest.mark.parametrize(
    ("reader", "text", "message"),
    [  # a submission's bad PredictionString; a row of empty fields is a row
        (read_supplied_cells, "ID,ImageWidth,ImageHeight,PredictionString\n\na,8,8,0 0.5 m1\n"
         "b,8,8,0 0.5\n", "line 4: 2 fields in the PredictionString"),
        (read_supplied_probs, "id,Nucleoli,Cytosol\n \n,,\na,0.1,0.2\n", "line 3: image id ''"),
    ],
)  # fmt: skip
def test_other_rows_name_their_lines(tmp_path, reader, text, message):
    path = tmp_path / "f.csv"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        reader(path, IDS, NAMES, TOKENS)
