"""vera_core.errors' readers of what comes from outside: parse_json (the one reader of untrusted JSON), not_unicode
and finite_number. Their callers' refusals (a 422 naming the field, a DatasetError naming the line) are tested
where those callers are; here, that every way the text can be wrong is one ValueError saying why."""

from __future__ import annotations

import pytest

from vera_core.errors import JSONTextError, finite_number, not_unicode, parse_json


@pytest.mark.parametrize(("text", "reason"), [
    ("{x", r"^is not JSON \(Expecting property name enclosed in double quotes: line 1 column 2 \(char 1\)\)$"),
    (b"\xff{}", r"^is not UTF-8 text \(invalid start byte at byte 0\)$"),
    ("[" * 5000 + "]" * 5000, r"^nests too deeply \(arrays or objects over about a thousand levels deep\)$"),
    ('{"a": ' + "9" * 5000 + "}", r"^holds an integer of over 4,300 digits$"),
], ids=["not-json", "not-utf8", "deep", "long-integer"])
def test_every_way_untrusted_json_fails_is_one_value_error_saying_why(text: str | bytes, reason: str) -> None:
    with pytest.raises(JSONTextError, match=reason) as refused:
        parse_json(text)
    assert isinstance(refused.value, ValueError)  # what callers catching ValueError expect, RecursionError included
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_json_that_is_fine_reads_as_json_does() -> None:
    assert parse_json('{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    assert parse_json(b'\xef\xbb\xbf{"bom": true}') == {"bom": True}  # UTF-8 with a byte-order mark
    deep, levels = parse_json("[" * 100 + "]" * 100), 1  # a hundred levels is no problem
    while deep:
        deep, levels = deep[0], levels + 1
    assert levels == 100
    # a key given twice: the last value, as json.loads reads it, unless each key must come once
    assert parse_json('{"a": 1, "a": 2}') == {"a": 2}
    assert parse_json('{"a": {"b": 1}, "b": 2}', keys_once=True) == {"a": {"b": 1}, "b": 2}
    with pytest.raises(JSONTextError, match=r"^gives the key 'b' more than once in an object$"):
        parse_json('{"a": {"b": 1, "b": 2}}', keys_once=True)
    # bytes are UTF-8 (RFC 8259): json.loads alone would guess UTF-16 from these and read them
    with pytest.raises(JSONTextError, match="is not UTF-8 text"):
        parse_json('{"a": 1}'.encode("utf-16"))


def test_not_unicode_and_finite_number() -> None:
    assert not_unicode(parse_json('{"k": ["ok", "\\ud800"]}')) == "\ud800" and not_unicode({"k": "é"}) is None
    assert [finite_number(v) for v in (1, 2.5, True, "3", float("nan"), float("inf"), 10**400)] == [
        1.0, 2.5, None, None, None, None, None]
