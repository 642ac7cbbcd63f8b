"""Search filters for version listings, in MLflow's search syntax: clauses joined by ``and``, each a field, an operator
and a literal, e.g. ``metrics.accuracy > 0.9 and r <= 256 and base_model = 'minilm'``.

    filter  := clause ("and" clause)*
    clause  := field op literal | field "in" "(" literal ("," literal)* ")" | keyed "is" ["not"] "null"
    field   := metrics.<key> | published_via.<key> | properties.<key> | params.<key> | r | seed | generator
               | base_model | owner | name | tag | trainable_parameters | stored_bytes | created
               | verification_status | yanked
    keyed   := metrics.<key> | published_via.<key> | properties.<key> | params.<key>
    op      := = | != | < | <= | > | >= | like
    literal := 'text' ('' inside is one quote) | number | true | false

A small tokenizer and a recursive-descent parser read the text (never eval); each clause becomes a SQLAlchemy
expression with its literal as a bound parameter (never SQL built from strings). Metric clauses and metric sorts read
the normalised table ``version_metrics`` (one row per numeric metric, index (key, value, version_id)), which
``metric_rows`` fills at publish; a metric clause matches only versions that record that metric, as in MLflow.
``published_via.<key>`` reads the lineage a trusted publisher's token records (the CI run that published a version:
``publisher``, ``issuer``, ``subject``, or one of its recorded claims, such as ``repository`` or ``sha``) from its JSON
column; it matches only versions published that way. ``properties.<key>`` reads a version's key=value properties
(``version_properties``, index (key, value)); as a metric clause, it matches only versions that have that key.
``params.<key>`` reads what a version was trained with (``version_params``, as text: ``params.lr = '0.01'``; a
number literal is compared as the text `vera train` records, so ``params.lr = 0.01`` and ``params.epochs in (1, 2)``
match too; text has no order, so only =, !=, like and in). ``<keyed> is null`` matches the versions without that
key (``properties.validation is null``: not yet reviewed), and ``is not null`` those with it, whatever its value
(MLflow's ``tags.<key> IS NULL``).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from registry.domain.errors import InvalidInput
from registry.domain.schemas import check_name, check_text
from registry.store import models as m
from vera_core.errors import finite_number

MAX_FILTER_LENGTH = 1000
MAX_CLAUSES = 16
MAX_IN_VALUES = 100
MAX_TEXT_LITERAL = 200
#: published_via clauses read a JSON column of every version the other clauses leave (no index): an outsider's 16
#: LIKE clauses over 20,000 versions took 0.8 s a request
MAX_PROVENANCE_CLAUSES = 4
#: Metric keys: nested metric objects are flattened with dots (``final_eval.accuracy``).
MAX_METRIC_KEY = 200
MAX_METRIC_DEPTH = 4
MAX_METRICS_PER_VERSION = 1000
METRIC_PREFIX = "metrics."
PROVENANCE_PREFIX = "published_via."
#: published_via's own keys; any other key of a published_via clause names one of its recorded claims.
PROVENANCE_KEYS = ("publisher", "issuer", "subject")
_CLAIM_KEY = re.compile(r"[A-Za-z0-9_\-]{1,100}")
PROPERTY_PREFIX = "properties."
PARAM_PREFIX = "params."
#: In the words of what `vera train` and fine-tune jobs record (``test.accuracy``; the demo's adapters have it).
EXAMPLE = "metrics.test.accuracy > 0.9 and r <= 256 and base_model = 'minilm'"
_INT_RANGE = 2**63  # what a BIGINT holds (SQLite refuses larger Python ints)
_SEED_RANGE = 2**64

Literal = str | int | float | bool
ORDERING = ("=", "!=", "<", "<=", ">", ">=")
#: A keyed field's key missing, or there: ``properties.validation is null`` (MLflow's ``tags.<key> IS NULL``).
NULL_TESTS = ("is null", "is not null")
OPERATORS = (*ORDERING, "like", "in", *NULL_TESTS)


class FilterError(InvalidInput):
    """A filter that does not parse or does not fit its fields; the message says where and what was expected."""


# ---- tokens ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: str  # field | string | number | op | word | ( | ) | , | end
    text: str
    at: int  # 1-based character position in the filter
    value: Literal | None = None


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?(?![\w.]))
  | (?P<op>!=|<>|<=|>=|==|=|<|>)
  | (?P<punct>[(),])
  | (?P<field>[A-Za-z_][\w\-]*(?:\.(?:[\w\-:/]+|`[^`]+`))*)
""", re.VERBOSE)
_WORDS = {"and", "or", "not", "like", "ilike", "in", "true", "false", "is", "null"}


def _tokens(text: str) -> Iterator[Token]:
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _error(position + 1, "a field, an operator or a literal", repr(text[position:position + 10]))
        kind, found = match.lastgroup or "", match.group()
        at = position + 1
        position = match.end()
        if kind == "space":
            continue
        if kind == "string":
            yield Token("string", found, at, found[1:-1].replace("''", "'"))
        elif kind == "number":
            yield Token("number", found, at, _number(found, at))
        elif kind == "punct":
            yield Token(found, found, at)
        elif kind == "field" and found.lower() in _WORDS:
            yield Token("word", found.lower(), at)
        else:
            yield Token(kind, found, at)
    yield Token("end", "the end of the filter", len(text) + 1)


def _number(text: str, at: int) -> int | float:
    value: int | float = int(text) if re.fullmatch(r"[-+]?[0-9]+", text) else float(text)  # ASCII digits only
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(at, "a finite number", text)
    return value


def _error(at: int, expected: str, found: str) -> FilterError:
    # the example as code: Markdown (the dashboard's messages) would draw <= as ≤, which cannot be pasted back
    return FilterError(f"filter, at character {at}: expected {expected}, found {found}. Example: `{EXAMPLE}`")


# ---- parsing -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clause:
    """One ``field op value`` clause; ``key`` is the metric's key for ``metrics.<key>``."""

    field: str
    op: str
    value: Literal | tuple[Literal, ...]
    at: int
    key: str | None = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.i = 0

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def peek(self) -> Token:
        return self.tokens[self.i]

    def clauses(self) -> list[Clause]:
        found = [self.clause()]
        while self.peek().kind != "end":
            joiner = self.take()
            if joiner.text == "or":
                raise FilterError(f"filter, at character {joiner.at}: only 'and' joins clauses ('or' is not "
                                  "supported, as in MLflow's search); run one search per alternative.")
            if joiner.text != "and":
                raise _error(joiner.at, "'and' or the end of the filter", repr(joiner.text))
            if len(found) == MAX_CLAUSES:
                raise FilterError(f"filter, at character {joiner.at}: at most {MAX_CLAUSES} clauses, found more; "
                                  "narrow the search with fewer.")
            found.append(self.clause())
        return found

    def clause(self) -> Clause:
        field = self.take()
        if field.kind != "field":
            raise _error(field.at, _FIELD_LIST, _shown(field))
        name, key = _field_name(field)
        op = self.take()
        if op.kind == "op":
            operator = {"==": "=", "<>": "!="}.get(op.text, op.text)
        elif op.kind == "word" and op.text in ("like", "in"):
            operator = op.text
        elif op.kind == "word" and op.text == "is":
            return Clause(field=name, op=self.null_test(), value=(), at=field.at, key=key)
        else:
            raise _error(op.at, f"an operator ({', '.join(OPERATORS)}) after {field.text!r}", _shown(op))
        value = self.values() if operator == "in" else self.literal()
        return Clause(field=name, op=operator, value=value, at=field.at, key=key)

    def null_test(self) -> str:
        """What follows ``is``: ``null`` or ``not null``."""
        negated = self.peek().kind == "word" and self.peek().text == "not"
        if negated:
            self.take()
        token = self.take()
        if token.kind != "word" or token.text != "null":
            raise _error(token.at, "'null' after 'is not'" if negated else "'null' or 'not null' after 'is'",
                         _shown(token))
        return "is not null" if negated else "is null"

    def literal(self) -> Literal:
        token = self.take()
        if token.kind in ("string", "number") and token.value is not None:
            if isinstance(token.value, str) and len(token.value) > MAX_TEXT_LITERAL:
                raise _error(token.at, f"a string of at most {MAX_TEXT_LITERAL} characters",
                             f"{len(token.value)} characters")
            return token.value
        if token.kind == "word" and token.text in ("true", "false"):
            return token.text == "true"
        hint = " (strings go in single quotes)" if token.kind == "field" else ""
        raise _error(token.at, f"a literal: 'text', a number, true or false{hint}", _shown(token))

    def values(self) -> tuple[Literal, ...]:
        opening = self.take()
        if opening.kind != "(":
            raise _error(opening.at, "'(' opening the list of values after 'in'", _shown(opening))
        items = [self.literal()]
        while (token := self.take()).kind == ",":
            if len(items) == MAX_IN_VALUES:
                raise _error(token.at, f"at most {MAX_IN_VALUES} values in a list", "more")
            items.append(self.literal())
        if token.kind != ")":
            raise _error(token.at, "',' or ')' in the list of values", _shown(token))
        return tuple(items)


def _shown(token: Token) -> str:
    return token.text if token.kind == "end" else repr(token.text)


def _field_name(token: Token) -> tuple[str, str | None]:
    text = token.text
    if text.lower().startswith(METRIC_PREFIX):
        key = ".".join(part.strip("`") for part in _dotted(text[len(METRIC_PREFIX):]))
        if not key or len(key) > MAX_METRIC_KEY:
            raise _error(token.at, f"metrics.<key> with a key of 1-{MAX_METRIC_KEY} characters", repr(text[:60]))
        return "metrics", key
    if text.lower().startswith(PROVENANCE_PREFIX):
        key = text[len(PROVENANCE_PREFIX):]
        if not _CLAIM_KEY.fullmatch(key):
            raise _error(token.at, f"published_via.<key> with a key of 1-100 letters, digits, '_' or '-' (one of "
                                   f"{', '.join(PROVENANCE_KEYS)}, or a claim such as repository, ref or sha)",
                         repr(text[:60]))
        return "published_via", key
    for prefix, field in ((PROPERTY_PREFIX, "properties"), (PARAM_PREFIX, "params")):
        if text.lower().startswith(prefix):
            key = text[len(prefix):]
            if not _is_name(key):  # a key is a name, as publish (and PATCH, for properties) checks it
                meant = f"{field}.{key.lower()}"  # params.LR: keys are lower-case
                hint = f" (did you mean {meant}?)" if key.lower() != key and _is_name(key.lower()) else ""
                raise _error(token.at, f"{field}.<key> with a key of 1-64 lowercase letters, digits, '.', '_' or "
                                       "'-'", repr(text[:60]) + hint)
            return field, key
    if text.lower() not in FIELDS:
        raise _error(token.at, _FIELD_LIST, repr(text[:60]))
    return text.lower(), None


def _is_name(text: str) -> bool:
    try:
        check_name(text, "Key")
    except InvalidInput:
        return False
    return True


def _dotted(text: str) -> list[str]:
    """``a.`b.c`.d`` -> ['a', 'b.c', 'd'] (backticks keep dots and other characters inside one part)."""
    return re.findall(r"`[^`]+`|[^.`]+", text)


def parse_filter(text: str) -> list[Clause]:
    """The clauses of a filter, each checked against its field; FilterError says where and what was expected."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(f"filter is {len(text):,} characters; the limit is {MAX_FILTER_LENGTH:,}.")
    try:
        check_text(text.encode().decode(), "filter", max_length=MAX_FILTER_LENGTH, multiline=True)
    except UnicodeEncodeError as exc:
        raise FilterError(f"filter is not valid Unicode text (at character {exc.start + 1}).") from None
    except InvalidInput as exc:
        raise FilterError(str(exc)) from None
    clauses = _Parser(text).clauses()
    if sum(c.field == "published_via" for c in clauses) > MAX_PROVENANCE_CLAUSES:
        raise FilterError(f"filter: at most {MAX_PROVENANCE_CLAUSES} published_via clauses (each reads every "
                          "version's provenance); narrow the search with fewer, or with other fields.")
    for clause in clauses:
        _field(clause).check(clause)
    return clauses


# ---- fields and their SQL ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """What a field accepts (operators, literal type) and how a clause on it becomes SQL."""

    kind: str  # number | text | seed | time | flag | tag | alias | metric | provenance | property | param
    ops: tuple[str, ...]
    column: Any = None

    def check(self, clause: Clause) -> None:
        name = f"{clause.field}.{clause.key}" if clause.key is not None else clause.field
        if clause.op not in self.ops:
            raise FilterError(f"filter, at character {clause.at}: {name} takes {', '.join(self.ops)}; "
                              f"{clause.op!r} is not among them." + (
                                  " Parameters are text, as recorded: name the values, e.g. params.lr in (0.01, "
                                  "0.02)." if self.kind == "param" else ""))
        values = clause.value if isinstance(clause.value, tuple) else (clause.value,)
        for value in values:
            if not _fits(self.kind, value):
                raise FilterError(f"filter, at character {clause.at}: {name} compares with {_WANTS[self.kind]}, "
                                  f"found {value!r}.")
        if clause.op == "like" and (len(str(clause.value)) - len(str(clause.value).rstrip("\\"))) % 2:
            # PostgreSQL refused it with a 500 ("LIKE pattern must not end with escape character"), SQLite took it
            raise FilterError(f"filter, at character {clause.at}: {name} like takes a pattern whose '\\' escapes "
                              "the character after it (\\% a percent sign, \\_ an underscore, \\\\ a backslash); "
                              "this one ends with a lone '\\'.")

    def where(self, clause: Clause) -> ColumnElement[bool]:
        values = clause.value if isinstance(clause.value, tuple) else (clause.value,)
        converted = [_converted(self.kind, v) for v in values]
        if self.kind in ("metric", "property", "param", "provenance"):
            return self._keyed(clause, converted)
        if self.kind == "tag":
            tag = m.VersionTag.tag
            if clause.op == "!=":
                return ~m.AdapterVersion.tags.any(tag == converted[0])
            return m.AdapterVersion.tags.any(_compare(tag, clause.op, converted))
        if self.kind == "alias":  # the versions an alias of their adapter names (latest: each adapter's newest)
            name = m.Alias.name
            if clause.op == "!=":
                return ~exists().where(m.Alias.version_id == m.AdapterVersion.id, name == converted[0])
            return m.AdapterVersion.id.in_(select(m.Alias.version_id).where(_compare(name, clause.op, converted)))
        if self.column is m.AdapterVersion.dataset_sha256:  # recorded lower-case
            converted = [str(v).lower() for v in converted]
        test = _compare(self.column, clause.op, converted)
        if self.column in (m.Adapter.owner, m.Adapter.name):
            return m.AdapterVersion.adapter_id.in_(select(m.Adapter.id).where(test))
        if self.column is m.BaseModelShapes.name:
            return m.AdapterVersion.base_model_id.in_(select(m.BaseModelShapes.id).where(test))
        return test

    @staticmethod
    def _keyed(clause: Clause, converted: list[Any]) -> ColumnElement[bool]:
        """A clause on metrics.<key>, properties.<key>, params.<key> or published_via.<key>: only versions that have
        the key match a comparison; ``is null`` matches those without it."""
        if clause.field in KEYED_ROWS:  # a row per (version, key)
            held: Any = KEYED_ROWS[clause.field]
            if clause.op in NULL_TESTS:  # (NOT EXISTS: PostgreSQL plans NOT IN over a big subquery per row)
                having = exists().where(held.version_id == m.AdapterVersion.id, held.key == clause.key)
                return ~having if clause.op == "is null" else having
            test = _compare(held.value, clause.op, converted)
            return m.AdapterVersion.id.in_(select(held.version_id).where(held.key == clause.key, test))
        key = str(clause.key)
        path = (key,) if key in PROVENANCE_KEYS else ("claims", key)
        claim: ColumnElement[str] = m.AdapterVersion.published_via[path].as_string()
        if clause.op in NULL_TESTS:  # (a version not published by a trusted publisher has none)
            return claim.is_(None) if clause.op == "is null" else claim.is_not(None)
        return _compare(claim, clause.op, converted)

_WANTS = {"number": "a number (below 2**63 in magnitude)", "text": "a 'string'", "tag": "a 'string'",
          "alias": "a 'string'",
          "provenance": "a 'string'", "property": "a 'string'", "param": "a 'string', a number, true or false",
          "seed": "a whole number from 0 to 2**64 - 1", "flag": "true or false",
          "metric": "a number within a float's range (about 1.8e308 in magnitude)",
          "time": "a date or time in quotes, e.g. '2026-01-31' or '2026-01-31T12:00:00Z', within the years 1 to 9999 "
                  "once in UTC"}


def _fits(kind: str, value: Literal) -> bool:
    if kind == "number":  # (a column holds below 2**63; SQLite refuses larger Python ints)
        return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < _INT_RANGE
    if kind == "metric":
        return finite_number(value) is not None
    if kind == "seed":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _SEED_RANGE
    if kind == "time":
        return isinstance(value, str) and _timestamp(value) is not None
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "param":  # (true: as `vera train` records a switch)
        return isinstance(value, str | bool) or finite_number(value) is not None
    return isinstance(value, str)


def _timestamp(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):  # not ISO 8601, or out of range once in UTC
        return None


def _converted(kind: str, value: Literal) -> Literal | datetime:
    if kind == "seed":
        return str(value)  # stored as decimal text (a uint64 exceeds BIGINT)
    if kind == "time":
        return _timestamp(str(value)) or value
    if kind == "metric":
        return float(value)  # the column is a float (and a huge int would overflow SQLite)
    if kind == "param" and not isinstance(value, str):
        return json.dumps(value)  # as vera_core.recipes.param_text writes a number: 0.01, 3, 5e-05
    return value


def _compare(column: Any, op: str, values: list[Any]) -> ColumnElement[bool]:
    """``column op value`` with the value bound; LIKE matches case-insensitively on every database."""
    value = values[0]
    if op == "in":
        return column.in_(values)  # type: ignore[no-any-return]
    if op == "like":  # '\' escapes % and _ (and itself) on both databases alike: PostgreSQL's default, SQLite's none
        return func.lower(column).like(str(value).lower(), escape="\\")
    return _COMPARISONS[op](column, value)  # type: ignore[no-any-return]


_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


_TEXT_OPS = ("=", "!=", "like", "in")
FIELDS: dict[str, Field] = {
    "r": Field("number", (*ORDERING, "in"), m.AdapterVersion.r),
    "seed": Field("seed", ("=", "!=", "in"), m.AdapterVersion.seed),
    "generator": Field("text", _TEXT_OPS, m.AdapterVersion.generator),
    "base_model": Field("text", _TEXT_OPS, m.BaseModelShapes.name),
    "owner": Field("text", _TEXT_OPS, m.Adapter.owner),
    "name": Field("text", _TEXT_OPS, m.Adapter.name),
    "tag": Field("tag", _TEXT_OPS),
    "alias": Field("alias", _TEXT_OPS),
    "trainable_parameters": Field("number", (*ORDERING, "in"), m.AdapterVersion.trainable_parameters),
    "stored_bytes": Field("number", (*ORDERING, "in"), m.AdapterVersion.stored_bytes),
    "created": Field("time", ORDERING, m.AdapterVersion.created_at),
    "verification_status": Field("text", _TEXT_OPS, m.AdapterVersion.verification_status),
    "dataset_sha256": Field("text", ("=", "!=", "in"), m.AdapterVersion.dataset_sha256),
    "yanked": Field("flag", ("=", "!="), m.AdapterVersion.yanked),
}
METRIC = Field("metric", (*ORDERING, "in", *NULL_TESTS))
PROVENANCE = Field("provenance", (*_TEXT_OPS, *NULL_TESTS))
PROPERTY = Field("property", (*_TEXT_OPS, *NULL_TESTS))
PARAM = Field("param", (*_TEXT_OPS, *NULL_TESTS))
#: The keyed fields held as a row per (version, key) in a table of their own.
KEYED_ROWS: dict[str, Any] = {"metrics": m.VersionMetric, "properties": m.VersionProperty, "params": m.VersionParam}


_FIELD_LIST = (f"a field ({', '.join(FIELDS)}, metrics.<key>, published_via.<key>, properties.<key> or "
               "params.<key>)")


def _field(clause: Clause) -> Field:
    return {"metrics": METRIC, "published_via": PROVENANCE, "properties": PROPERTY, "params": PARAM}.get(
        clause.field) or \
        FIELDS[clause.field]


def filter_conditions(clauses: list[Clause], sorted_by: MetricOrder | None = None) -> list[ColumnElement[bool]]:
    """The WHERE conditions of parsed clauses (each with its literal bound as a parameter). A clause on the metric
    the listing is sorted by tests the sort's join directly, so that one index range walk does both."""
    conditions = []
    for c in clauses:
        if sorted_by is not None and c.field == "metrics" and c.key == sorted_by.key and c.op not in NULL_TESTS:
            values = [float(v) for v in (c.value if isinstance(c.value, tuple) else (c.value,))]
            conditions.append(_compare(sorted_by.column, c.op, values))
        else:
            conditions.append(_field(c).where(c))
    return conditions


def mentions(clauses: list[Clause], field: str) -> bool:
    return any(c.field == field for c in clauses)


# ---- sorting by a metric -----------------------------------------------------------------------------------------
class MetricOrder:
    """``sort=metrics.<key>``: versions that record the metric, by its value (ties by age), walking the index
    (key, value, version_id) of version_metrics."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.table = aliased(m.VersionMetric, name="sort_metric")
        self.column = self.table.value

    def joined(self, query: Select[Any]) -> Select[Any]:
        return query.join(self.table, and_(self.table.version_id == m.AdapterVersion.id, self.table.key == self.key))

    def value_of(self, s: Session, version_id: int) -> float | None:
        """The sorted value of a version (for the next page's cursor)."""
        return s.scalar(select(m.VersionMetric.value).where(m.VersionMetric.version_id == version_id,
                                                            m.VersionMetric.key == self.key))


def metric_order(sort: str) -> MetricOrder | None:
    """The metric a ``sort`` names (``metrics.<key>``, one '-' prefix for descending), or None for another sort."""
    name = sort.removeprefix("-")
    if not name.lower().startswith(METRIC_PREFIX):
        return None
    key = name[len(METRIC_PREFIX):]
    if not key or len(key) > MAX_METRIC_KEY or not key.isprintable():
        raise InvalidInput(f"sort {sort!r}: a metric sort is metrics.<key> with a key of 1-{MAX_METRIC_KEY} "
                           "printable characters, e.g. -metrics.accuracy.")
    return MetricOrder(key)


# ---- the normalised metric rows ----------------------------------------------------------------------------------
def metric_rows(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a version as {dotted key: value}: nested objects flattened with dots (at most
    MAX_METRIC_DEPTH levels), booleans, strings, lists and non-finite numbers left out, keys over MAX_METRIC_KEY
    characters left out, at most MAX_METRICS_PER_VERSION keys (the first in sorted order)."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, dict) and depth < MAX_METRIC_DEPTH:
            for key, item in value.items():
                walk(f"{prefix}{key}.", item, depth + 1)
        elif (number := finite_number(value)) is not None:
            key = prefix[:-1]
            if key and len(key) <= MAX_METRIC_KEY:
                found[key] = number

    walk("", metrics, 0)
    return {key: found[key] for key in sorted(found)[:MAX_METRICS_PER_VERSION]}


def add_metric_rows(s: Session, version: m.AdapterVersion) -> None:
    """Record a new version's numeric metrics in version_metrics (in the publish's transaction)."""
    s.add_all(m.VersionMetric(version_id=version.id, key=key, value=value)
              for key, value in metric_rows(version.metrics).items())
