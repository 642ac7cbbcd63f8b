"""Listing and searching versions: filters, sorts with keyset cursors (pages stay correct while versions are
published), and an optional count of all matches."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy import text as sql
from sqlalchemy.orm import Session, selectinload

from registry.domain.errors import InvalidInput
from registry.domain.schemas import MAX_LOOKUP, MAX_PAGE, LookedUp, Page, Ref, VersionInfo, check_text
from registry.services.access import readable_clause
from registry.services.downloads import download_counts
from registry.services.filters import MetricOrder, filter_conditions, mentions, metric_order, parse_filter
from registry.services.lookup import LATEST, pair_lines, pairs_of, version_info
from registry.services.tokens import Principal
from registry.store import models as m
from registry.store.database import Database
from vera_core.errors import parse_json

#: Sortable columns of version listings (the key metrics are sorted by the dashboard within a page).
SORTS: dict[str, Any] = {
    "created": m.AdapterVersion.id, "trainable_parameters": m.AdapterVersion.trainable_parameters,
    "stored_bytes": m.AdapterVersion.stored_bytes, "r": m.AdapterVersion.r,
    "verification_status": m.AdapterVersion.verification_status,
}
#: A BIGINT's range (SQLite refuses a larger Python int), and the longest text a cursor's sorted value may be.
_BIGINT = 2**63
MAX_CURSOR_TEXT = 64


class Search:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list_versions(
        self, *, owner: str | None = None, name: str | None = None, base_model: str | None = None,
        r: int | None = None, seed: int | None = None, generator: str | None = None, tag: str | None = None,
        text: str | None = None, include_yanked: bool = False, cursor: str | None = None, limit: int = 50,
        sort: str = "-created", with_total: bool = False, filter_text: str | None = None,
        viewer: Principal | None = None, latest: bool = False,
    ) -> Page:
        """Filtered and sorted (``sort``: one of SORTS or metrics.<key>, '-' for descending; ties by age), with an
        opaque cursor for the next page; ``with_total`` also counts all matches (in the same transaction).
        ``filter_text``: clauses in MLflow's search syntax (registry.services.filters), e.g. ``metrics.accuracy > 0.9
        and r <= 256``. ``viewer``: only the versions of adapters it may read (registry.services.access; None: all).
        ``latest``: one version an adapter, the newest (highest number) of those the other filters match (MLflow's
        registered models list, HF's model list): a listing of adapters rather than of versions.
        """
        for what, value in (("owner", owner), ("name", name), ("base_model", base_model), ("generator", generator),
                            ("tag", tag), ("q", text)):
            if value is not None:
                check_text(value, what, max_length=200)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, got {limit}.")
        clauses = parse_filter(filter_text) if filter_text else []
        metric = metric_order(sort)
        column = metric.column if metric is not None else SORTS.get(sort.removeprefix("-"))
        if column is None:
            raise InvalidInput(f"sort {sort!r} is not one of {', '.join(SORTS)} or metrics.<key> (prefix '-' for "
                               "descending).")
        descending = sort.startswith("-")
        query = _filtered(owner=owner, name=name, base_model=base_model, r=r, seed=seed, generator=generator,
                          tag=tag, text=text, include_yanked=include_yanked or mentions(clauses, "yanked")
                          # an alias may name a yanked version: shown, as it is; `alias != 'x'` names none (it let
                          # every yanked version in, with latest=true as its adapter's newest: an outsider's walk)
                          or any(c.field == "alias" and c.op != "!=" for c in clauses))
        query = _narrowed(query, clauses, metric)
        if viewer is not None and viewer.readable_owners() is not None:
            query = query.where(m.AdapterVersion.adapter_id.in_(select(m.Adapter.id).where(readable_clause(viewer))))
        if latest:
            # each adapter's newest matching version, (adapter_id, version) unique, joined to the versions alone: a
            # newest matching version matches, and the filters asked again of the outer rows made SQLite walk a
            # metric filter's list once a row (5 s for 100,000 versions, 27 ms without latest: an outsider's walk)
            newest = query.with_only_columns(m.AdapterVersion.adapter_id, func.max(m.AdapterVersion.version).label(
                "newest")).group_by(m.AdapterVersion.adapter_id).subquery()
            query = select(m.AdapterVersion).join(newest, and_(m.AdapterVersion.adapter_id == newest.c.adapter_id,
                                                               m.AdapterVersion.version == newest.c.newest))
            query = metric.joined(query) if metric is not None else query  # the sort's value
        counting = select(func.count()).select_from(query.with_only_columns(m.AdapterVersion.id).subquery())
        if cursor:
            value, last_id = _decode_cursor(cursor, sort, "metric" if metric is not None else
                                            "text" if column is m.AdapterVersion.verification_status else "whole")
            after = (column < value) if descending else (column > value)
            tie = (m.AdapterVersion.id < last_id) if descending else (m.AdapterVersion.id > last_id)
            query = query.where(or_(after, (column == value) & tie))
        order = (column.desc(), m.AdapterVersion.id.desc()) if descending else (column.asc(), m.AdapterVersion.id.asc())
        query = query.order_by(*order).limit(limit + 1).options(
            selectinload(m.AdapterVersion.adapter), selectinload(m.AdapterVersion.base_model),
            selectinload(m.AdapterVersion.tags))
        with self.db.session() as s:
            total = s.scalar(counting) if with_total else None
            rows = list(s.scalars(query))
            items = _infos(s, rows[:limit])
            last, next_cursor = (rows[limit - 1] if len(rows) > limit else None), None
            if last is not None:  # the sorted value of the page's last row, and its id
                last_value = metric.value_of(s, last.id) if metric is not None else getattr(last, column.key)
                next_cursor = _encode_cursor(sort, last_value, last.id)
        return Page(items=items, next_cursor=next_cursor, total=total)

    def lookup(self, refs: list[str], *, viewer: Principal | None = None) -> list[LookedUp]:
        """What each of ``refs`` names now (owner/name:N, owner/name@ALIAS, owner/name: its latest), in their order:
        the version, or None where there is none that ``viewer`` may read (missing and unreadable alike, as a GET of
        one answers 404 to both). Three queries for all of them (the adapters; versions by number; by alias; two more
        for names no adapter has now, where they moved), then a listing page's worth for the versions found, however
        many refs up to MAX_LOOKUP: a server holding thousands of versions re-checks them at the cost of a few
        listings, not a request each. Moves (`vera mv`) are not followed, as a GET follows none: a name an adapter
        had before it moved is None, with ``moved_to`` its name now where ``viewer`` may read it there (a GET's
        ``X-Vera-Moved-To``), for the client to follow.
        """
        if not 1 <= len(refs) <= MAX_LOOKUP:
            raise InvalidInput(f"refs must list 1 to {MAX_LOOKUP} references, got {len(refs)}; split a longer list "
                               f"into requests of {MAX_LOOKUP}.")
        parsed: list[Ref] = []
        for i, text in enumerate(refs):
            try:
                parsed.append(Ref.parse(text))
            except InvalidInput as exc:
                raise InvalidInput(f"refs[{i}]: {exc}") from None
        numbered = {(r.owner, r.name, r.version) for r in parsed if r.version is not None}
        aliased = {(r.owner, r.name, r.alias or LATEST) for r in parsed if r.version is None}
        # each key query joins the exact keys asked (a VALUES list) to a unique index, (owner, name), then
        # (adapter_id, version) and (adapter_id, name): a probe a key, in SQL text, since SQLAlchemy compiles a
        # VALUES construct anew for every list (20 ms for 500 keys). A row-value IN was planned by SQLite as a scan of
        # whole tables (207 ms for 4 references in 100,000 adapters), and owner IN (...) AND name IN (...) matched
        # every pair of the owners and names asked (outsiders' and a reviewer's findings, session 36)
        keyed: dict[tuple[str, str, int | str], int] = {}  # (owner, name, number or alias) -> version id
        with self.db.session() as s:
            adapters = {adapter_id: (owner, name) for adapter_id, owner, name, visibility in _joined(
                s, m.Adapter.__tablename__, ("owner", "name"), sorted({(r.owner, r.name) for r in parsed}),
                ("id", "owner", "name", "visibility"))
                if viewer is None or viewer.can_read(owner, visibility)}  # as readable_clause says
            ids = {pair: adapter_id for adapter_id, pair in adapters.items()}
            exact = [(ids[(owner, name)], number) for owner, name, number in sorted(numbered) if (owner, name) in ids]
            for version_id, adapter_id, number in _joined(s, m.AdapterVersion.__tablename__, ("adapter_id", "version"),
                                                          exact, ("id", "adapter_id", "version")):
                keyed[(*adapters[adapter_id], number)] = version_id
            named = [(ids[(owner, name)], alias) for owner, name, alias in sorted(aliased) if (owner, name) in ids]
            for version_id, adapter_id, alias in _joined(s, m.Alias.__tablename__, ("adapter_id", "name"), named,
                                                         ("version_id", "adapter_id", "name")):
                keyed[(*adapters[adapter_id], alias)] = version_id
            rows = list(s.scalars(select(m.AdapterVersion).where(m.AdapterVersion.id.in_(set(keyed.values())))
                                  .options(selectinload(m.AdapterVersion.adapter),
                                           selectinload(m.AdapterVersion.base_model),
                                           selectinload(m.AdapterVersion.tags)))) if keyed else []
            infos = dict(zip((v.id for v in rows), _infos(s, rows), strict=True))
            # (one deleted between the two statements, which PostgreSQL's READ COMMITTED may show: not found)
            by_key = {key: infos[version_id] for key, version_id in keyed.items() if version_id in infos}
            moved = _moved(s, sorted({(r.owner, r.name) for r in parsed} - ids.keys()), viewer)
        answers = []
        for text, r in zip(refs, parsed, strict=True):
            version = by_key.get((r.owner, r.name, r.version if r.version is not None else (r.alias or LATEST)))
            answers.append(LookedUp(requested=text, version=version,
                                    moved_to=moved.get((r.owner, r.name)) if version is None else None))
        return answers


def _moved(s: Session, names: list[tuple[str, str]], viewer: Principal | None) -> dict[tuple[str, str], str]:
    """owner/name now of each adapter that had one of ``names`` (owner, name) before it moved, where ``viewer`` may
    read it there (moves.Moves.moved_to's rule, for many names in two queries)."""
    went = {(owner, name): adapter_id for owner, name, adapter_id in _joined(
        s, m.AdapterMove.__tablename__, ("owner", "name"), names, ("owner", "name", "adapter_id"))}
    if not went:
        return {}
    now = {adapter_id: (owner, name) for adapter_id, owner, name, visibility in s.execute(
        select(m.Adapter.id, m.Adapter.owner, m.Adapter.name, m.Adapter.visibility).where(
            m.Adapter.id.in_(set(went.values()))))
        if viewer is None or viewer.can_read(owner, visibility)}
    return {old: "/".join(now[adapter_id]) for old, adapter_id in went.items() if adapter_id in now}


def _joined(s: Session, table: str, key: tuple[str, str], rows: list[tuple[Any, Any]], columns: tuple[str, ...]
            ) -> list[tuple[Any, ...]]:
    """``columns`` of the rows of ``table`` whose two ``key`` columns (a unique index) hold one of ``rows``: a
    VALUES list joined to the table, each value a bound parameter (names from the schema, never from a caller)."""
    if not rows:
        return []
    values = ", ".join(f"(:a{i}, :b{i})" for i in range(len(rows)))
    params = {name: value for i, (a, b) in enumerate(rows) for name, value in ((f"a{i}", a), (f"b{i}", b))}
    first, second = key
    return [tuple(row) for row in s.execute(sql(
        f"WITH wanted(x, y) AS (VALUES {values}) SELECT {', '.join(f't.{c}' for c in columns)} "
        f"FROM {table} AS t JOIN wanted AS w ON t.{first} = w.x AND t.{second} = w.y"), params)]


def _infos(s: Session, rows: list[m.AdapterVersion]) -> list[VersionInfo]:
    """The page's versions with their aliases, download counts, properties and parameters, a query each for the
    whole page (as rows, not ORM objects: cheaper than loading relationships)."""
    ids = [v.id for v in rows]
    aliases: dict[int, list[str]] = {}
    for version_id, alias in s.execute(select(m.Alias.version_id, m.Alias.name).where(
            m.Alias.version_id.in_(ids)).order_by(m.Alias.name)):
        aliases.setdefault(version_id, []).append(alias)
    downloads = download_counts(s, ids)
    properties, params = _pairs(s, m.VersionProperty, ids), _pairs(s, m.VersionParam, ids)
    return [version_info(s, v, aliases.get(v.id, []), downloads.get(v.id, 0), properties=properties.get(v.id, {}),
                         params=params.get(v.id, {})) for v in rows]


def _pairs(s: Session, table: type[m.VersionProperty] | type[m.VersionParam], ids: list[int]
           ) -> dict[int, dict[str, str]]:
    """The key=value rows of ``table`` (properties or parameters) of the versions ``ids``, by version, keys sorted:
    one row a version, its pairs as lines (lookup.pairs_of), not one a pair (50 versions' 30 parameters each, as
    1,500 rows, made a listing page 1.4x slower: bench/RESULTS.md, 2026-12-05)."""
    return {version_id: pairs_of(text) for version_id, text in s.execute(
        select(table.version_id, pair_lines(table)).where(table.version_id.in_(ids)).group_by(table.version_id))}


def _filtered(*, owner: str | None, name: str | None, base_model: str | None, r: int | None, seed: int | None,
              generator: str | None, tag: str | None, text: str | None, include_yanked: bool
              ) -> Select[m.AdapterVersion]:
    """Versions matching the filters, joining only what a filter needs (so that the planner can walk an
    (order column, id) index and stop early)."""
    query = select(m.AdapterVersion)
    if owner or name or text:
        query = query.join(m.Adapter)
    if base_model:
        query = query.join(m.BaseModelShapes)
    equal = {m.Adapter.owner: owner, m.Adapter.name: name, m.BaseModelShapes.name: base_model,
             m.AdapterVersion.r: r, m.AdapterVersion.seed: None if seed is None else str(seed),
             m.AdapterVersion.generator: generator}
    query = query.where(*(column == value for column, value in equal.items() if value not in (None, "")))
    if tag:
        query = query.where(m.AdapterVersion.tags.any(m.VersionTag.tag == tag))
    if text:  # the text as it is: its % and _ are characters, not wildcards ('50%' found every 50...)
        query = query.where(or_(*(func.lower(column).contains(text.lower(), autoescape=True) for column in (
            m.Adapter.name, m.Adapter.owner, m.AdapterVersion.description))))
    if not include_yanked:
        query = query.where(m.AdapterVersion.yanked.is_(False))
    return query


def _narrowed(query: Select[m.AdapterVersion], clauses: list[Any], metric: MetricOrder | None
              ) -> Select[m.AdapterVersion]:
    """The listing narrowed by a filter's clauses, and joined to the metric it is sorted by (registry.services.filters:
    versions without that metric drop out)."""
    query = metric.joined(query) if metric is not None else query
    return query.where(*filter_conditions(clauses, metric))


def _encode_cursor(sort: str, value: Any, last_id: int) -> str:
    text = json.dumps(["v2", sort, value, last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, kind: str) -> tuple[Any, int]:
    """A cursor's sorted value and last id, each of the type and range ``sort`` gives them (``kind``: ``metric``, a
    finite number; ``whole``, a BIGINT; ``text``): a crafted one (2**70, null, true) was a 500 (an outsider's walk,
    session 29)."""
    try:
        version, for_sort, value, last_id = parse_json(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if version != "v2" or for_sort != sort or not _whole(last_id) or last_id < 0 or not _fits(value, kind):
            raise ValueError(version)
        return (float(value) if kind == "metric" else value), last_id
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
        raise InvalidInput(f"cursor {cursor!r} is not one this registry issued for sort={sort!r}; start again "
                           "without it.") from None


def _whole(value: Any) -> bool:
    """An int a BIGINT holds (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and -_BIGINT <= value < _BIGINT


def _fits(value: Any, kind: str) -> bool:
    if kind == "metric":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))
    if kind == "text":
        return isinstance(value, str) and len(value) <= MAX_CURSOR_TEXT
    return _whole(value)
