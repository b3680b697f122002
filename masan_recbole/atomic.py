"""Checks for RecBole atomic files (``.inter``, ``.item``, ``.user``, ...) with clear error messages.

RecBole's loader (``Dataset._load_feat``) fails cryptically on some malformed files and silently loads
wrong data for others; :func:`check_atomic_file` names the file, line, column and config key involved.
"""
import locale
import logging
import math
import os

from masan_recbole.data import closest_converter, convert_command

FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")
_EXAMPLE = "user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float"
_OTHER_SEPARATORS = ("\t", ",", ";", " ", "|")
# Strings pandas reads as missing in a float column (pandas' default na_values); RecBole fills them.
_NA_STRINGS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)


class AtomicFileError(ValueError):
    """An atomic file that RecBole cannot load correctly."""


def _parse_header(header, sep):
    """Split a header line into [(name, type)]; return (columns, error message or None)."""
    columns = []
    for number, text in enumerate(header.split(sep), start=1):
        name, colon, ftype = text.partition(":")
        if not colon or not name or ":" in ftype:
            return None, (f"column {number} header {text!r} is not of the form 'name:type' "
                          f"(exactly one ':' between a non-empty name and the type)")
        if ftype not in FEATURE_TYPES:
            return None, (f"column {number} ({name!r}) header {text!r} has the unknown type {ftype!r}; "
                          f"the type must be one of {', '.join(FEATURE_TYPES)}")
        columns.append((name, ftype))
    return columns, None


def _other_separator(text, sep, n_columns=None):
    """A separator other than ``sep`` that splits ``text`` plausibly, or None."""
    for other in _OTHER_SEPARATORS:
        if other == sep or other not in text:
            continue
        parts = text.split(other)
        if n_columns is None and _parse_header(text, other)[0] and len(parts) > 1:
            return other
        if n_columns is not None and len(parts) == n_columns:
            return other
    return None


def _check_quotes(path, lineno, parts):
    """RecBole's pandas reader treats a value starting with '"' as quoted: an unclosed quote swallows
    separators and following lines into one value. Accept only values quoted whole, like "a b"."""
    for i, value in enumerate(parts):
        if value.startswith('"') and not (len(value) >= 2 and value.endswith('"') and '"' not in value[1:-1]):
            raise AtomicFileError(
                f"{path}: line {lineno}, column {i + 1}: value {value!r} starts with a double quote that is "
                f"not closed within the value; RecBole (pandas) would read the following separators and "
                f"lines into it. Remove or replace the quote.")


def _first_undecodable_line(path, encoding):
    """Number of the first line of ``path`` that does not decode with ``encoding``."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                return lineno
    return "?"


def check_atomic_file(path, field_separator="\t", seq_separator=" ", encoding="utf-8",
                      required_fields=(), max_rows=None, ordering_fields=()):
    """Check that ``path`` is a well-formed RecBole atomic file and return its ``{field: type}``.

    The first line must be a header of ``name:type`` columns (type one of token, token_seq, float,
    float_seq) separated by ``field_separator``; every following non-blank line must have as many
    columns; ``float`` values must be numbers or empty (missing values are allowed: RecBole fills
    them); each ``seq_separator``-separated item of a ``float_seq`` value must be a number.

    Args:
        path: the atomic file, e.g. ``dataset/ml-1m/ml-1m.inter``.
        field_separator, seq_separator, encoding: as RecBole's config keys of the same names
            (``encoding=None``, RecBole's default, means the locale's encoding, as ``open()``).
        required_fields: field names that must be columns of the file: either a mapping
            ``{field name: config key that names it}`` (e.g. ``{"business_id": "ITEM_ID_FIELD"}``),
            so the error can name the key to change, or a plain sequence of names.
        max_rows: check only the first ``max_rows`` data rows (None: all rows).
        ordering_fields: float columns that order the interactions (the time field of a
            time-ordered split): a missing value there is an error, since RecBole would fill it
            with the column mean and so move the interaction inside its user's sequence.

    Returns:
        dict mapping each column name to its type, in file order.

    Raises:
        AtomicFileError: with the file, line, column and offending text for the first problem found.
    """
    path = os.fspath(path)
    encoding = encoding or locale.getpreferredencoding(False)  # None: like open() and RecBole's default
    if not os.path.isfile(path):
        raise AtomicFileError(f"atomic file not found: {path} (RecBole reads "
                              f"<data_path>/<dataset>/<dataset>.<suffix>, e.g. dataset/ml-1m/ml-1m.inter)")
    try:
        with open(path, "r", encoding=encoding) as f:
            header = f.readline()
            if not header.strip():
                raise AtomicFileError(f"{path}: the file is empty; line 1 must be a header such as {_EXAMPLE}")
            header = header.rstrip("\r\n")
            if header.startswith("\ufeff"):
                raise AtomicFileError(f"{path}: the file starts with a byte-order mark (BOM); RecBole would "
                                      f"read the first column as {header.split(field_separator)[0]!r}. "
                                      f"Save the file as UTF-8 without BOM.")
            columns, problem = _parse_header(header, field_separator)
            if problem:
                other = _other_separator(header, field_separator)
                if other is not None:
                    raise AtomicFileError(
                        f"{path}: line 1 (header) {header!r} is not separated by {field_separator!r} but "
                        f"seems to use {other!r}; set `field_separator: {other!r}` in your config or "
                        f"convert the file to {field_separator!r}-separated columns.")
                raise AtomicFileError(f"{path}: line 1 (header): {problem}. Example of a correct header "
                                      f"(tab-separated): {_EXAMPLE}")
            names = [name for name, _ in columns]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise AtomicFileError(f"{path}: line 1 (header): duplicate column name(s) "
                                      f"{', '.join(map(repr, duplicates))} in {names}")
            types = dict(columns)
            if isinstance(required_fields, str):
                required_fields = (required_fields,)
            missing = [name for name in required_fields if name not in types]
            if missing:
                if hasattr(required_fields, "get"):
                    keys = ", ".join(f"{required_fields[name]} (= {name!r})" for name in missing)
                    hint = f"change {keys} or `load_col` to columns that exist"
                else:
                    hint = ("set USER_ID_FIELD / ITEM_ID_FIELD / RATING_FIELD / TIME_FIELD and `load_col` "
                            "to columns that exist")
                raise AtomicFileError(f"{path}: required column(s) {', '.join(map(repr, missing))} not in "
                                      f"the header; the file has columns {names}: {hint}")

            n_columns = len(columns)
            floats = [(i, name) for i, (name, ftype) in enumerate(columns) if ftype == "float"]
            float_seqs = [(i, name) for i, (name, ftype) in enumerate(columns) if ftype == "float_seq"]
            rows, extra_lines = 0, []
            for lineno, line in enumerate(f, start=2):
                if max_rows is not None and rows >= max_rows:
                    break
                line = line.rstrip("\r\n")
                if not line.strip():
                    if field_separator not in line:
                        continue  # pandas (and so RecBole) skips blank and whitespace-only lines
                    raise AtomicFileError(f"{path}: line {lineno} holds only empty fields; RecBole would load it as "
                                          "a row of missing values (a user and item that do not exist): delete it")
                parts = line.split(field_separator)
                if '"' in line:
                    _check_quotes(path, lineno, parts)
                if len(parts) > n_columns and _other_separator(line, field_separator, n_columns) is None:
                    # RecBole reads the header's columns by name (pandas usecols): a field past them is
                    # dropped and the row loads as it should
                    extra_lines.append(lineno)
                    parts = parts[:n_columns]
                if len(parts) != n_columns:
                    message = (f"{path}: line {lineno} has {len(parts)} column(s) but the header has "
                               f"{n_columns} ({', '.join(names)}), with field_separator {field_separator!r}")
                    other = _other_separator(line, field_separator, n_columns)
                    if other is not None:
                        message += (f"; the line splits into {n_columns} columns on {other!r}: the file seems "
                                    f"to use another separator (set `field_separator: {other!r}` or convert it)")
                    elif len(parts) < n_columns:
                        message += "; an empty value still needs its separator (e.g. 'a\\t\\tb')"
                    raise AtomicFileError(message)
                for i, name in floats:
                    value = parts[i]
                    try:
                        missing = math.isnan(float(value))
                    except ValueError:
                        if value.strip() not in _NA_STRINGS:
                            raise AtomicFileError(f"{path}: line {lineno}, column {i + 1} ({name!r}, float): "
                                                  f"{value!r} is not a number") from None
                        missing = True
                    if missing and name in ordering_fields:
                        raise AtomicFileError(
                            f"{path}: line {lineno}, column {i + 1} ({name!r}): the value is missing ({value!r}), "
                            f"but {name!r} orders each user's interactions; give it a value or drop the line")
                for i, name in float_seqs:
                    for item in filter(None, parts[i].split(seq_separator)):
                        try:
                            float(item)
                        except ValueError:
                            raise AtomicFileError(
                                f"{path}: line {lineno}, column {i + 1} ({name!r}, float_seq): item {item!r} "
                                f"is not a number (items are separated by seq_separator {seq_separator!r})"
                            ) from None
                rows += 1
            if rows == 0 and max_rows != 0:
                raise AtomicFileError(f"{path}: the file has a header but no data rows")
            if extra_lines:
                more = f" (and {len(extra_lines) - 1} more lines)" if len(extra_lines) > 1 else ""
                logging.getLogger().warning(
                    f"{path}: line {extra_lines[0]}{more} has more fields than the header's {n_columns}; "
                    "RecBole ignores the fields past the header, and so they are ignored")
    except UnicodeDecodeError as error:
        lineno = _first_undecodable_line(path, encoding)
        raise AtomicFileError(f"{path}: line {lineno} is not valid {encoding} ({error.reason}); set the "
                              f"`encoding` config key to the file's encoding") from None
    return types


def _wants_field(cfg, suffix, field):
    load_col = cfg["load_col"]
    if not load_col or suffix not in load_col:
        return True
    return field in load_col[suffix]


def load_checked(original_load_feat, dataset, filepath, source):
    """RecBole's ``Dataset._load_feat`` after :func:`check_atomic_file` on the file, requiring the
    user and item columns of an ``.inter`` file (and the time column for time-ordered splits)."""
    cfg = dataset.config
    required, ordering = {}, ()
    if str(filepath).endswith(".inter"):
        keys = ["USER_ID_FIELD", "ITEM_ID_FIELD"]
        if (cfg["eval_args"] or {}).get("order") == "TO":
            keys.append("TIME_FIELD")
            ordering = (cfg["TIME_FIELD"],)
        required = {cfg[k]: k for k in keys if cfg[k] and _wants_field(cfg, "inter", cfg[k])}
    check_atomic_file(
        filepath,
        field_separator=cfg["field_separator"],
        seq_separator=cfg["seq_separator"],
        encoding=cfg["encoding"],
        required_fields=required,
        ordering_fields=ordering,
    )
    return original_load_feat(dataset, filepath, source)


def refuse_download(dataset, reason="RecBole's url.yaml has no download for it."):
    """For a dataset that is not downloaded (:mod:`masan_recbole.download`): says where the files
    go and, where a converter can write them, the command that does."""
    name = dataset.dataset_name
    message = (f"Dataset '{name}' not found: expected RecBole atomic files in "
               f"{os.path.abspath(dataset.dataset_path)} (at least {name}.inter); {reason}")
    command = convert_command(name, to=os.path.dirname(os.path.normpath(dataset.dataset_path)))
    if command is None:
        message += f" Put them there, or set data_path to the folder that contains '{name}/' (docs/datasets.md)."
    elif closest_converter(name) == name:
        message += f"\nWrite them with: {command}"
    else:
        found = closest_converter(name)
        message += (f"\nIf you have RecBole's own '{name}' atomic files, put them there (docs/datasets.md)."
                    f"\nOr convert the {found} files: {command}\nthen run with --dataset={found}")
    raise FileNotFoundError(message)
