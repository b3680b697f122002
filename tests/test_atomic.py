"""Behavioural tests of masan_recbole.atomic.check_atomic_file on small generated files."""
import pytest

from masan_recbole.atomic import AtomicFileError, check_atomic_file

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ROWS = ["1\t10\t4\t881250949", "1\t11\t5\t881250950", "2\t10\t3\t881250951"]


def write(tmp_path, lines, name="toy.inter"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_file_returns_types(tmp_path):
    path = write(tmp_path, [HEADER] + ROWS)
    assert check_atomic_file(path, required_fields=("user_id", "item_id", "timestamp")) == {
        "user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}


def test_valid_sequence_columns(tmp_path):
    lines = ["item_id:token\ttitle:token_seq\temb:float_seq", "1\tToy Story\t0.5 -1 2e3", "2\t\t"]
    path = write(tmp_path, lines, "toy.item")
    assert check_atomic_file(path) == {"item_id": "token", "title": "token_seq", "emb": "float_seq"}


def test_empty_float_value_passes(tmp_path):
    path = write(tmp_path, [HEADER, "1\t10\t\t881250949", "2\t11\tNaN\t881250950"])
    assert check_atomic_file(path)["rating"] == "float"


def test_missing_file(tmp_path):
    with pytest.raises(AtomicFileError, match="not found"):
        check_atomic_file(tmp_path / "nope.inter")


def test_header_without_type(tmp_path):
    path = write(tmp_path, ["user_id\titem_id:token"] + ["1\t2"])
    with pytest.raises(AtomicFileError) as info:
        check_atomic_file(path)
    message = str(info.value)
    assert "line 1" in message and "column 1" in message and "'user_id'" in message
    assert "name:type" in message and "user_id:token" in message  # shows an example header


def test_header_with_unknown_type(tmp_path):
    path = write(tmp_path, ["user_id:token\titem_id:token\trating:int"] + ["1\t2\t3"])
    with pytest.raises(AtomicFileError) as info:
        check_atomic_file(path)
    message = str(info.value)
    assert "'rating:int'" in message and "'int'" in message and "column 3" in message
    assert "token_seq" in message and "float_seq" in message


def test_duplicate_column(tmp_path):
    path = write(tmp_path, ["user_id:token\titem_id:token\titem_id:token", "1\t2\t3"])
    with pytest.raises(AtomicFileError, match="duplicate column name.*'item_id'"):
        check_atomic_file(path)


def test_non_numeric_float_value(tmp_path):
    path = write(tmp_path, [HEADER] + ROWS + ["3\t12\tfour\t881250952"])
    with pytest.raises(AtomicFileError) as info:
        check_atomic_file(path)
    message = str(info.value)
    assert "toy.inter" in message and "line 5" in message and "'rating'" in message and "'four'" in message


def test_non_numeric_float_seq_item(tmp_path):
    path = write(tmp_path, ["item_id:token\temb:float_seq", "1\t0.1 0.2", "2\t0.3 x 0.5"], "toy.item")
    with pytest.raises(AtomicFileError) as info:
        check_atomic_file(path)
    message = str(info.value)
    assert "line 3" in message and "'emb'" in message and "'x'" in message


def test_row_with_missing_column(tmp_path):
    path = write(tmp_path, [HEADER] + ROWS[:2] + ["2\t10\t881250951"])
    with pytest.raises(AtomicFileError) as info:
        check_atomic_file(path)
    message = str(info.value)
    assert "toy.inter" in message and "line 4" in message
    assert "has 3 column(s)" in message and "header has 4" in message


def test_a_trailing_field_past_the_header_is_a_warning_as_recbole_ignores_it(tmp_path, caplog):
    # RecBole 1.2.1's own test data (tests/test_data/test/test.inter) has such a line
    path = write(tmp_path, [HEADER, ROWS[0] + "\t7", *ROWS[1:], ROWS[1] + "\t8"])
    with caplog.at_level("WARNING"):
        assert list(check_atomic_file(path)) == ["user_id", "item_id", "rating", "timestamp"]
    (record,) = [r for r in caplog.records if "more fields" in r.getMessage()]
    assert f"{path}: line 2 (and 1 more lines) has more fields than the header's 4" in record.getMessage()


def test_whitespace_only_lines_are_blank_lines(tmp_path):
    # pandas skips them; the separator is not the problem
    path = write(tmp_path, [HEADER, ROWS[0], "   ", *ROWS[1:]])
    assert list(check_atomic_file(path)) == ["user_id", "item_id", "rating", "timestamp"]
    # but pandas loads a line of empty fields as a row of missing values
    path = write(tmp_path, [HEADER, ROWS[0], " \t \t\t", *ROWS[1:]])
    with pytest.raises(AtomicFileError, match="line 3 holds only empty fields.*delete it"):
        check_atomic_file(path)


def test_missing_required_field_names_config_key(tmp_path):
    path = write(tmp_path, [HEADER] + ROWS)
    with pytest.raises(AtomicFileError) as info:
        check_atomic_file(path, required_fields={"user_id": "USER_ID_FIELD", "business_id": "ITEM_ID_FIELD"})
    message = str(info.value)
    assert "'business_id'" in message and "ITEM_ID_FIELD" in message and "load_col" in message
    assert "['user_id', 'item_id', 'rating', 'timestamp']" in message  # lists the columns that exist


def test_missing_required_field_plain_names(tmp_path):
    path = write(tmp_path, [HEADER] + ROWS)
    with pytest.raises(AtomicFileError, match="'date'.*TIME_FIELD"):
        check_atomic_file(path, required_fields=["user_id", "date"])


def test_wrong_separator_in_rows(tmp_path):
    path = write(tmp_path, [HEADER, ROWS[0], "1,11,5,881250950"])
    with pytest.raises(AtomicFileError) as info:
        check_atomic_file(path)
    message = str(info.value)
    assert "line 3" in message and "separator" in message and "field_separator" in message and "','" in message


def test_wrong_separator_whole_file(tmp_path):
    path = write(tmp_path, [HEADER.replace("\t", ",")] + [row.replace("\t", ",") for row in ROWS])
    with pytest.raises(AtomicFileError, match="line 1.*seems to use ','.*field_separator"):
        check_atomic_file(path)
    assert check_atomic_file(path, field_separator=",")["rating"] == "float"


def test_unclosed_quote(tmp_path):
    path = write(tmp_path, [HEADER, ROWS[0], '"1\t11\t5\t881250950', '2"\t10\t3\t881250951'])
    with pytest.raises(AtomicFileError, match="line 3, column 1.*double quote"):
        check_atomic_file(path)


def test_header_only_and_bom(tmp_path):
    with pytest.raises(AtomicFileError, match="no data rows"):
        check_atomic_file(write(tmp_path, [HEADER]))
    with pytest.raises(AtomicFileError, match="byte-order mark"):
        check_atomic_file(write(tmp_path, ["\ufeff" + HEADER] + ROWS, "bom.inter"))


def test_max_rows_limits_the_check(tmp_path):
    path = write(tmp_path, [HEADER] + ROWS + ["3\t12\tfour\t881250952"])
    assert check_atomic_file(path, max_rows=3)["item_id"] == "token"
    with pytest.raises(AtomicFileError):
        check_atomic_file(path, max_rows=None)


def test_undecodable_line_names_line_and_encoding_key(tmp_path):
    path = tmp_path / "latin.inter"
    path.write_bytes(b"user_id:token\titem_id:token\n1\t2\n\xe9t\xe9\t3\n")
    with pytest.raises(AtomicFileError, match="line 3 is not valid utf-8.*`encoding`"):
        check_atomic_file(path, encoding="utf-8")
    assert check_atomic_file(path, encoding="latin-1") == {"user_id": "token", "item_id": "token"}
