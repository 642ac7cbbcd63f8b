"""Editable metadata (issue 16): an adapter's description and model card, a version's description and tags, read
and changed after publish. A version's bytes never change here. Every change is one transaction with one audit event
(``adapter-edit`` or ``version-edit``) whose detail holds the fields changed, ``before`` and ``after``; a request that
changes nothing records nothing.

Each editable adapter field is one entry of ADAPTER_FIELDS (its check), so that a new field of AdapterUpdate is one
more entry there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import (
    MAX_DESCRIPTION,
    MAX_PROPERTIES,
    MAX_TAGS,
    AdapterInfo,
    AdapterUpdate,
    Ref,
    RetentionInfo,
    TagChange,
    VersionInfo,
    VersionUpdate,
    check_card,
    check_name,
    check_properties,
    check_text,
)
from registry.services.access import check_visibility, not_found
from registry.services.lookup import LATEST, version_info, version_ref
from registry.services.moves import refuse_protected, resolve_locked
from registry.store import models as m
from registry.store.database import Database

T = TypeVar("T")

#: The most card revisions an adapter keeps: a /hf commit id names its card revision in six hex digits.
MAX_CARD_REVISIONS = 0xFFFFFF


def _keep_card(s: Session, row: m.Adapter, before: str, after: str) -> None:
    """Record a card edit in adapter_cards: the new text as the next revision, and on the first edit also the text
    it replaced, as revision 0 (what was served before any revision was kept)."""
    newest = s.scalar(select(func.max(m.AdapterCard.revision)).where(m.AdapterCard.adapter_id == row.id))
    if newest is None:
        s.add(m.AdapterCard(adapter_id=row.id, revision=0, card=before))
        newest = 0
    if newest >= MAX_CARD_REVISIONS:
        raise Conflict(f"The card of {row.owner}/{row.name} was edited {newest:,} times, the most one adapter keeps "
                       "(each edit is a new /hf commit); publish under a new name to start a new history.")
    s.add(m.AdapterCard(adapter_id=row.id, revision=newest + 1, card=after))


def check_description(value: str) -> str:
    return check_text(value, "description", max_length=MAX_DESCRIPTION, multiline=True)


def _retention(rule: dict[str, Any]) -> dict[str, Any] | None:
    """A retention rule as stored (RetentionPolicy checked it; update_adapter's dump left out its null parts): its
    parts given, or None (``{}``: no rule)."""
    return rule or None


#: The adapter fields AdapterUpdate may change, each with its check (which returns the value to store).
ADAPTER_FIELDS: dict[str, Callable[[Any], Any]] = {"description": check_description, "card": check_card,
                                                   "visibility": check_visibility, "retention": _retention}


def adapter_ref(text: str) -> Ref:
    """``owner/name`` (an adapter, not one of its versions), or InvalidInput saying so."""
    return Ref.parse_adapter(text)


def _adapter_row(s: Session, ref: Ref) -> m.Adapter:
    row = s.scalar(select(m.Adapter).where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name))
    if row is None:
        raise not_found(ref.owner, ref.name)
    return row


def _adapter_info(s: Session, row: m.Adapter) -> AdapterInfo:
    count = s.scalar(select(func.count()).select_from(m.AdapterVersion)
                     .where(m.AdapterVersion.adapter_id == row.id)) or 0
    aliases = {alias: version for alias, version in s.execute(
        select(m.Alias.name, m.AdapterVersion.version).join(m.AdapterVersion, m.AdapterVersion.id == m.Alias.version_id)
        .where(m.Alias.adapter_id == row.id).order_by(m.Alias.name))}
    return AdapterInfo(owner=row.owner, name=row.name, description=row.description, card=row.card,
                       created_at=row.created_at, versions=count, latest_version=aliases.get(LATEST),
                       aliases=aliases, visibility=row.visibility,
                       retention=None if row.retention is None else RetentionInfo.model_validate(row.retention))


def _checked_changes(changes: VersionUpdate) -> tuple[dict[str, str], list[str], str | None]:
    """A version change's properties to set and remove and its description, checked; every field's problem in one
    refusal (a walk's finding, session 31: two bad fields in one save, one named)."""
    problems: list[str] = []

    def checked(check: Callable[[], T], default: T) -> T:
        try:
            return check()
        except InvalidInput as exc:
            problems.append(str(exc))
            return default

    props, tag_change, text = changes.properties, changes.tags, changes.description
    nothing: dict[str, str] = {}
    setting = checked(lambda: check_properties(props.set), nothing) if props is not None else nothing
    removing = props.remove if props is not None else []
    checked(lambda: _check_names(removing, "Property key"), None)
    if both := sorted(set(setting) & set(removing)):
        problems.append(f"properties: {', '.join(both)} both set and removed; say one or the other.")
    description = checked(lambda: check_description(text), None) if text is not None else None
    if tag_change is not None:
        checked(lambda: _check_tag_change(tag_change), None)
    if problems:
        raise InvalidInput(" ".join(problems))
    return setting, removing, description


def _check_tag_change(change: TagChange) -> None:
    """``set`` not mixed with add/remove, and every tag named a valid name."""
    if change.set is not None and (change.add or change.remove):
        raise InvalidInput("tags: either set them all ('set') or add and remove some ('add', 'remove'), not both.")
    _check_names([*(change.set or []), *change.add, *change.remove], "Tag")


def _check_names(names: list[str], what: str) -> None:
    for name in names:
        check_name(name, what)


def _tags_after(current: list[str], change: TagChange) -> list[str]:
    """The tags a change leaves (checked by _check_tag_change), at most MAX_TAGS."""
    tags = set(change.set) if change.set is not None else (set(current) | set(change.add)) - set(change.remove)
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"A version takes at most {MAX_TAGS} tags; this change would leave {len(tags)}. Remove "
                           "some first.")
    return sorted(tags)


def _change_properties(v: m.AdapterVersion, setting: dict[str, str], removing: list[str]
                       ) -> tuple[dict[str, str], dict[str, str]] | None:
    """Set and remove the version's properties (keys not there are not removed); (before, after) if they changed.
    Rows of keys kept stay (a value set again is rewritten in place)."""
    rows = {p.key: p for p in v.properties}
    held = {key: row.value for key, row in rows.items()}
    kept = dict(sorted({**{k: value for k, value in held.items() if k not in removing}, **setting}.items()))
    if len(kept) > MAX_PROPERTIES:
        raise InvalidInput(f"A version takes at most {MAX_PROPERTIES} properties; this change would leave "
                           f"{len(kept)}. Remove some first.")
    if kept == held:
        return None
    for key in set(held) - set(kept):
        v.properties.remove(rows[key])
    for key, value in setting.items():
        if key in rows:
            rows[key].value = value
        else:
            v.properties.append(m.VersionProperty(key=key, value=value))
    return held, kept


def _audit(s: Session, *, actor: str, action: str, target: str, before: dict[str, Any],
           after: dict[str, Any]) -> None:
    s.add(m.AuditEvent(actor=actor, action=action, target=target, detail={"before": before, "after": after}))


class Metadata:
    def __init__(self, db: Database) -> None:
        self.db = db

    def adapter(self, adapter: str | Ref) -> AdapterInfo:
        """``owner/name`` as a whole: description, card, version count and aliases."""
        ref = adapter_ref(adapter) if isinstance(adapter, str) else adapter
        with self.db.session() as s:
            return _adapter_info(s, _adapter_row(s, ref))

    def card(self, owner: str, name: str) -> str:
        """The adapter's model card ("" when none was written)."""
        return self.adapter(Ref.of(owner, name)).card

    def update_adapter(self, adapter: str | Ref, changes: AdapterUpdate, *, actor: str, protected_too: bool = False
                       ) -> AdapterInfo:
        """Change an adapter's description, card, visibility and retention rule (the fields ``changes`` sets);
        audited as ``adapter-edit``. Making private an adapter that holds an alias its owner protects is refused
        (Forbidden: its readers would lose ``owner/name@prod``) unless ``protected_too`` says the caller administers
        the owner."""
        ref = adapter_ref(adapter) if isinstance(adapter, str) else adapter
        given = changes.model_dump(exclude_none=True)
        if not given:
            raise InvalidInput(f"Nothing to change: send at least one of {', '.join(ADAPTER_FIELDS)}.")
        checked = {field: ADAPTER_FIELDS[field](value) for field, value in given.items()}
        with self.db.session() as s:
            row = _adapter_row(s, ref)
            before = {f: getattr(row, f) for f, v in checked.items() if getattr(row, f) != v}
            after = {f: checked[f] for f in before}
            if after.get("visibility") == "private" and not protected_too:
                refuse_protected(s, row.owner, s.scalars(select(m.Alias.name).where(m.Alias.adapter_id == row.id)),
                                 f"make private the adapter that holds it ({ref.owner}/{ref.name}: its readers "
                                 "would lose it)")
            if after:
                for field, value in after.items():
                    setattr(row, field, value)
                _audit(s, actor=actor, action="adapter-edit", target=f"{ref.owner}/{ref.name}", before=before,
                       after=after)
                s.flush()  # the adapter's row is written (and, on PostgreSQL, locked) before its revisions are read
                if "card" in after:
                    _keep_card(s, row, before["card"], after["card"])
            return _adapter_info(s, row)

    def card_revision(self, ref: Ref, revision: int | None = None) -> tuple[int | None, str]:
        """``(revision, text)`` of the adapter's card: the newest (``revision`` None: the revision is None when the
        card was never edited), or revision ``revision``. NotFound when the adapter or that revision is not there;
        revision 0 of a card never edited is the card itself."""
        with self.db.session() as s:
            row = _adapter_row(s, ref)
            newest = s.scalar(select(m.AdapterCard).where(m.AdapterCard.adapter_id == row.id)
                              .order_by(m.AdapterCard.revision.desc()).limit(1))
            if revision is None:
                return (newest.revision if newest is not None else None), row.card
            if newest is None and revision == 0:
                return 0, row.card
            kept = s.get(m.AdapterCard, (row.id, revision))
            if kept is None:
                raise NotFound(f"{ref.owner}/{ref.name} has no card revision {revision}.")
            return revision, kept.card

    def update_version(self, ref: str | Ref, changes: VersionUpdate, *, actor: str) -> VersionInfo:
        """Change a version's description, tags and properties (never its bytes); audited as ``version-edit``."""
        if changes.description is None and changes.tags is None and changes.properties is None:
            raise InvalidInput("Nothing to change: send description, tags ({'set': [...]} or {'add': [...], "
                               "'remove': [...]}), or properties ({'set': {key: value}, 'remove': [key]}).")
        setting, removing, description = _checked_changes(changes)
        with self.db.session() as s:
            v = resolve_locked(s, ref)
            tags = [t.tag for t in v.tags]
            before: dict[str, Any] = {}
            after: dict[str, Any] = {}
            if description is not None and description != v.description:
                before["description"], after["description"] = v.description, description
                v.description = description
            new_tags = _tags_after(tags, changes.tags) if changes.tags is not None else tags
            if new_tags != tags:  # rows of tags kept stay; a tag removed and added again is not rewritten
                before["tags"], after["tags"] = tags, new_tags
                rows = {t.tag: t for t in v.tags}
                v.tags = [rows.get(tag) or m.VersionTag(tag=tag) for tag in new_tags]
            if (changed := _change_properties(v, setting, removing)) is not None:
                before["properties"], after["properties"] = changed
            if after:
                _audit(s, actor=actor, action="version-edit", target=version_ref(v), before=before, after=after)
                s.flush()
            return version_info(s, v)
