"""A compact, plain-text form of a run's per-user figures (user ids and their NDCG@10) inside its
result file, which the paired tests read back exactly.

As plain lists a Beauty run's two per-user lists took most of its half-megabyte file. Two facts make
them small: test users mostly come in consecutive id runs (a session's targets repeat its id), and
NDCG@10 of one target takes at most eleven values (a miss or one of ten ranks), a miss most often.

    pack(users, values) -> {"user_ranges": [[first, last], ...], "user_repeats": "...",
                            "palette": [value, ...], "codes": "..."}
    unpack(packed) -> (users, values)

* ``user_ranges``: the users as runs of consecutive ids, ``first`` to ``last`` inclusive;
  ``user_repeats`` (absent when no id repeats): one character per id of those runs, how many times
  running it occurs (a digit of ``DIGITS``, 1 to 61; a longer repeat starts a new run at the same id).
* ``palette``: the distinct values, the most frequent first; ``codes``: the values in order, where a
  decimal number stands for that many copies of the most frequent value and each other value is its
  index in ``palette[1:]``, written as ``width`` letters (base 52, ``a`` = 0; ``width`` the fewest
  letters that can number them all: one while there are at most 52).

Values come back as the same floats, so they are exact for any float (the result files' are
rounded to 6 decimals). ``unpack`` also takes the plain form, ``{"users": [...], "ndcg": [...]}``,
that result files held before.
"""

import re
from collections import Counter
from string import ascii_letters, digits

DIGITS = digits + ascii_letters  # repeat counts: 1 to 61
LETTERS = ascii_letters  # codes of the values other than the most frequent: base 52
MAX_REPEAT = len(DIGITS) - 1


def code_width(palette):
    """Letters per code: the fewest that number ``len(palette) - 1`` values."""
    width, room = 1, len(LETTERS)
    while room < len(palette) - 1:
        width, room = width + 1, room * len(LETTERS)
    return width


def pack_users(users):
    groups = []  # [id, times], each at most MAX_REPEAT times
    for user in users:
        if groups and groups[-1][0] == user and groups[-1][1] < MAX_REPEAT:
            groups[-1][1] += 1
        else:
            groups.append([user, 1])
    ranges = []
    for number, (user, _) in enumerate(groups):
        if number and user == groups[number - 1][0] + 1:
            ranges[-1][1] = user
        else:
            ranges.append([user, user])
    packed = {"user_ranges": ranges}
    if any(times > 1 for _, times in groups):
        packed["user_repeats"] = "".join(DIGITS[times] for _, times in groups)
    return packed


def unpack_users(packed):
    ids = [user for first, last in packed["user_ranges"] for user in range(first, last + 1)]
    repeats = packed.get("user_repeats")
    if repeats is None:
        return ids
    if len(repeats) != len(ids):
        raise ValueError(f"{len(repeats)} repeat counts for {len(ids)} user ids")
    return [user for user, times in zip(ids, repeats) for _ in range(DIGITS.index(times))]


def letters(number, width):
    out = ""
    for _ in range(width):
        number, digit = divmod(number, len(LETTERS))
        out = LETTERS[digit] + out
    return out


def pack_values(values):
    palette = [value for value, _ in Counter(values).most_common()]
    width = code_width(palette)
    code = {value: letters(index, width) for index, value in enumerate(palette[1:])}
    parts, run = [], 0
    for value in values:
        if palette and value == palette[0]:
            run += 1
            continue
        if run:
            parts.append(str(run))
            run = 0
        parts.append(code[value])
    if run:
        parts.append(str(run))
    return {"palette": palette, "codes": "".join(parts)}


def unpack_values(packed):
    palette, width = packed["palette"], code_width(packed["palette"])
    values = []
    for run, code in re.findall(r"(\d+)|([A-Za-z]+)", packed["codes"]):
        if run:
            values += [palette[0]] * int(run)
            continue
        if len(code) % width:
            raise ValueError(f"codes of {width} letters, found {code!r}")
        for start in range(0, len(code), width):
            index = 0
            for letter in code[start:start + width]:
                index = index * len(LETTERS) + LETTERS.index(letter)
            values.append(palette[1 + index])
    return values


def pack(users, values):
    """The compact form of ``users`` and their ``values`` (equal-length lists), a JSON-able dict."""
    if len(users) != len(values):
        raise ValueError(f"{len(users)} users, {len(values)} values")
    return {**pack_users(users), **pack_values(values)}


def unpack(packed):
    """(users, values), lists in the order given to ``pack``; other keys of ``packed`` are ignored."""
    if "users" in packed:  # the plain form
        return list(packed["users"]), list(packed["ndcg"])
    users, values = unpack_users(packed), unpack_values(packed)
    if len(users) != len(values):
        raise ValueError(f"{len(users)} users, {len(values)} values")
    return users, values
