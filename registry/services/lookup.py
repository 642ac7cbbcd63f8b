"""Finding versions and reading what they hold, inside a service's session: reference resolution, the ORM row to
domain object conversion (the one place that builds a VersionInfo), the ``latest`` alias, and a version's tensors
from its blobs. Helpers only: they flush, never commit."""

from __future__ import annotations

import difflib
import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVarTuple

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session, contains_eager, joinedload

from registry.domain.errors import InvalidInput, NotFound
from registry.domain.schemas import MAX_VERSION, Ref, VersionInfo
from registry.services.access import not_found
from registry.services.shapes import declared_layers, in_features_json
from registry.services.validation import ProjectionBudget
from registry.store import models as m
from registry.store.blobs import BlobStore
from vera_core.headers import metadata_of
from vera_core.keys import META_IN_FEATURES, PROJECTION_KEYS

if TYPE_CHECKING:  # torch is imported by what reads tensors, not by the metadata paths (a server starts without it)
    import torch

    from vera_core import ProjectionSpec

_Row = TypeVarTuple("_Row")
#: The alias the registry keeps on the newest version that is not yanked.
LATEST = "latest"


def resolve(s: Session, ref: str | Ref) -> m.AdapterVersion:
    """The version ``ref`` names (a number, an alias, or ``latest``), or NotFound saying what is missing. One query
    (the version with its adapter and base model) when it exists; a miss is looked up step by step to say what is
    missing."""
    ref = Ref.parse(ref) if isinstance(ref, str) else ref
    found = s.scalar(_resolving(ref.version is not None), naming_params(ref))
    return found if found is not None else _missing(s, ref)


def resolve_info(s: Session, ref: str | Ref) -> tuple[m.AdapterVersion, VersionInfo]:
    """``resolve`` and ``version_info`` in one query (its aliases, tags and download count as subqueries): the hot
    path of a fetch's file list. NotFound as ``resolve`` says it."""
    ref = Ref.parse(ref) if isinstance(ref, str) else ref
    row = s.execute(_resolving_info(ref.version is not None), naming_params(ref)).first()
    if row is None:
        v = _missing(s, ref)
        return v, version_info(s, v)
    v, alias_names, tag_names, count, property_lines, param_lines = row
    return v, version_info(s, v, sorted((alias_names or "").split()), count or 0,
                           tags=sorted((tag_names or "").split()), properties=pairs_of(property_lines),
                           params=pairs_of(param_lines))


def pair_lines(table: type[m.VersionProperty] | type[m.VersionParam]) -> Any:
    """The aggregate of a key=value table's rows as lines (``key=value``, one a row), which ``pairs_of`` reads."""
    return func.aggregate_strings(table.key + "=" + table.value, "\n")


def pairs_of(lines: str | None) -> dict[str, str]:
    """key=value lines (a key has no '=', a value no newline: check_properties, check_params) as a dict, keys sorted."""
    held = (line.partition("=") for line in (lines or "").split("\n") if line)
    return dict(sorted((key, value) for key, _, value in held))


# The hot queries are built once, with the reference as bound parameters (naming_params): building a statement and
# its cache key costs more than running it.
@functools.cache
def _resolving(by_number: bool) -> Select[m.AdapterVersion]:
    """The query for the version a reference names (by number, or through an alias), with its adapter and base
    model."""
    return naming(select(m.AdapterVersion).join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id)
                  .options(contains_eager(m.AdapterVersion.adapter), joinedload(m.AdapterVersion.base_model)),
                  by_number)


@functools.cache
def _resolving_info(by_number: bool) -> Select[m.AdapterVersion, str | None, str | None, int | None, str | None,
                                               str | None]:
    """``_resolving`` with the version's aliases, tags, download count, properties and parameters."""
    joined = func.aggregate_strings  # names and tags are [a-z0-9._-]: a space separates them
    aliases = select(joined(m.Alias.name, " ")).where(m.Alias.version_id == m.AdapterVersion.id)
    tags = select(joined(m.VersionTag.tag, " ")).where(m.VersionTag.version_id == m.AdapterVersion.id)
    downloads = select(m.VersionDownloads.downloads).where(m.VersionDownloads.version_id == m.AdapterVersion.id)
    pairs = [select(pair_lines(held)).where(held.version_id == m.AdapterVersion.id)
             for held in (m.VersionProperty, m.VersionParam)]
    aliases_, tags_, downloads_, properties_, params_ = (q.correlate(m.AdapterVersion).scalar_subquery()
                                                         for q in (aliases, tags, downloads, *pairs))
    # (the query may join aliases too)
    return _resolving(by_number).add_columns(aliases_, tags_, downloads_, properties_, params_)


def naming(query: Select[*_Row], by_number: bool) -> Select[*_Row]:
    """``query`` (over versions joined to their adapter) narrowed to the version a reference names, as bound
    parameters (``naming_params``): by number (``by_number``), or through an alias."""
    query = query.where(m.Adapter.owner == bindparam("owner"), m.Adapter.name == bindparam("name"))
    if by_number:
        return query.where(m.AdapterVersion.version == bindparam("version"))
    return query.join(m.Alias, m.Alias.version_id == m.AdapterVersion.id).where(
        m.Alias.adapter_id == m.Adapter.id, m.Alias.name == bindparam("alias"))


def naming_params(ref: Ref) -> dict[str, str | int]:
    """The parameters of a ``naming`` query for ``ref`` (whether it names a number: ``ref.version is not None``)."""
    if ref.version is not None:
        return {"owner": ref.owner, "name": ref.name, "version": ref.version}
    return {"owner": ref.owner, "name": ref.name, "alias": ref.alias or LATEST}


def _missing(s: Session, ref: Ref) -> m.AdapterVersion:
    """``resolve`` step by step: NotFound naming the adapter, version or alias that is missing."""
    adapter = s.scalar(select(m.Adapter).where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name))
    if adapter is None:
        raise not_found(ref.owner, ref.name)
    if ref.version is not None:
        version = s.scalar(select(m.AdapterVersion).where(m.AdapterVersion.adapter_id == adapter.id,
                                                          m.AdapterVersion.version == ref.version))
        if version is None:
            raise NotFound(f"{ref.owner}/{ref.name} has no version {ref.version}; {_versions_held(s, adapter.id)}.")
        return version
    alias_name = ref.alias or LATEST
    alias = s.scalar(select(m.Alias).where(m.Alias.adapter_id == adapter.id, m.Alias.name == alias_name))
    if alias is None:
        names = s.scalars(select(m.Alias.name).where(m.Alias.adapter_id == adapter.id).order_by(m.Alias.name)
                          .limit(NAMES_SAID + 1)).all()
        held = (f"its aliases: {', '.join(names[:NAMES_SAID])}{', ...' if len(names) > NAMES_SAID else ''}" if names
                else "it has none (its versions have no alias: name one by number)")
        close = difflib.get_close_matches(alias_name, names, n=1, cutoff=0.6)  # @prdo, @staging-: a typo
        meant = f" Did you mean {ref.owner}/{ref.name}@{close[0]}?" if close else ""
        if alias_name.isascii() and alias_name.isdigit() and len(alias_name.lstrip("0")) > 9:  # a path's version
            # past 999999999, read as an alias: it said how to set an alias of that name (an outsider's finding)
            raise NotFound(f"{ref.owner}/{ref.name} has no version {alias_name[:30]}: version numbers are 1 to "
                           f"{MAX_VERSION}; {_versions_held(s, adapter.id)}.")
        if not close and alias_name != LATEST:  # @prod before any was set (a newcomer's walk, session 38)
            meant = f" An alias is set with `vera alias {ref.owner}/{ref.name}:N {alias_name}`."
        raise NotFound(f"{ref.owner}/{ref.name} has no alias {alias_name!r}; {held}.{meant}")
    version = s.get(m.AdapterVersion, alias.version_id)
    if version is None:  # the foreign key forbids it
        raise NotFound(f"{ref.owner}/{ref.name}@{alias_name} points at a version that no longer exists.")
    return version


#: How many aliases (or version numbers) a message about a missing one names at most.
NAMES_SAID = 10


def _versions_held(s: Session, adapter_id: int) -> str:
    """The versions an adapter has, in words for a message about one it lacks: each number when there are few,
    else the range and how many (numbers of deleted versions are never reused, so there may be gaps)."""
    low, high, count = s.execute(select(func.min(m.AdapterVersion.version), func.max(m.AdapterVersion.version),
                                        func.count()).where(m.AdapterVersion.adapter_id == adapter_id)).one()
    if not count:
        return "it has no versions left"
    if count <= NAMES_SAID:
        numbers = s.scalars(select(m.AdapterVersion.version).where(m.AdapterVersion.adapter_id == adapter_id)
                            .order_by(m.AdapterVersion.version)).all()
        return f"its version{'s' if count > 1 else ''}: {', '.join(map(str, numbers))}"
    return f"its versions: {count:,} of them, {low} to {high}"


def version_ref(v: m.AdapterVersion) -> str:
    """``owner/name:N`` of a version row."""
    return str(Ref(owner=v.adapter.owner, name=v.adapter.name, version=v.version))


def version_info(s: Session, v: m.AdapterVersion, aliases: list[str] | None = None,
                 downloads: int | None = None, *, tags: list[str] | None = None,
                 properties: dict[str, str] | None = None, params: dict[str, str] | None = None) -> VersionInfo:
    """The domain object of a version row (``aliases``, ``downloads``, ``tags``, ``properties`` and ``params`` when
    the caller already loaded them)."""
    if aliases is None:
        aliases = sorted(s.scalars(select(m.Alias.name).where(m.Alias.version_id == v.id)))
    if downloads is None:
        downloads = s.scalar(select(m.VersionDownloads.downloads).where(m.VersionDownloads.version_id == v.id)) or 0
    return VersionInfo(
        owner=v.adapter.owner, name=v.adapter.name, version=v.version,
        ref=version_ref(v), aliases=aliases, base_model=v.base_model.name,
        base_revision=v.base_model.revision, r=v.r, seed=int(v.seed), generator=v.generator,
        projection_fingerprint=v.projection_fingerprint, seed_reproducible=v.seed_reproducible,
        target_modules=v.config.get("target_modules"), trainable_parameters=v.trainable_parameters,
        adapter_parameters=v.adapter_parameters, stored_bytes=v.stored_bytes, vectors_sha256=v.vectors_sha256,
        metrics=v.metrics, tags=[t.tag for t in v.tags] if tags is None else tags, description=v.description,
        published_by=v.published_by, created_at=v.created_at, yanked=v.yanked, yank_reason=v.yank_reason,
        verification_status=v.verification_status, verified_at=v.verified_at,
        lineage=lineage_block(s, v),
        downloads=downloads, visibility=v.adapter.visibility,
        properties=dict(sorted((p.key, p.value) for p in v.properties)) if properties is None else properties,
        params=dict(sorted((p.key, p.value) for p in v.params)) if params is None else params,
    )


def lineage_block(s: Session, v: m.AdapterVersion) -> dict[str, Any]:
    """Where a version came from, as VersionInfo.lineage gives it (only what was recorded): ``parent`` (the ref of
    the version it was fine-tuned from; ``parent_deleted`` instead, with the ref it had, once that one is deleted;
    ``parent_private`` instead when it is a version of another adapter that is private, since whoever reads this
    version may not read that one: the lineage graph, which knows the caller, names it to those who may),
    ``job_id``, ``dataset_sha256`` and ``dataset_bytes`` (its job's upload), ``code_revision``, ``hub_repo`` and
    ``hub_commit`` (pulled from the Hub), ``published_via`` (the trusted publisher's CI run that published it);
    for a copy (`vera cp`), ``copied_from``, the version it copies (``copied_from_private`` and
    ``copied_from_deleted`` as for the parent; a version of another registry: its URL and ref, as stated)."""
    recorded = (*_linked(s, v, "parent", v.parent_version_id, v.parent_ref), ("job_id", v.source_job_id),
                ("dataset_sha256", v.dataset_sha256), ("dataset_bytes", v.dataset_bytes),
                ("code_revision", v.code_revision), ("hub_repo", v.source_hub_repo),
                ("hub_commit", v.source_hub_commit), ("published_via", v.published_via),
                *(_linked(s, v, "copied_from", v.copied_from_version_id, v.copied_from_ref)
                  if not copied_elsewhere(v) else (("copied_from", v.copied_from_ref),)))
    return {key: value for key, value in recorded if value is not None}


def copied_elsewhere(v: m.AdapterVersion) -> bool:
    """Whether ``v`` says it copies a version of another registry (its URL and ref, as its publisher stated it:
    `vera cp --to-registry`), rather than one of this registry's."""
    return v.copied_from_version_id is None and "://" in (v.copied_from_ref or "")


def _linked(s: Session, v: m.AdapterVersion, key: str, row_id: int | None,
            ref_text: str | None) -> tuple[tuple[str, Any], ...]:
    """What ``v``'s readers may be told of another version it names (its parent, the one it copies): ``key`` and
    its ref; ``key_private`` when it is a version of another adapter that is private; ``key_deleted`` and the ref it
    had once it is deleted, where that name is ``v``'s own adapter's or a public one's."""
    other = s.get(m.AdapterVersion, row_id) if row_id is not None else None
    hidden = other is not None and other.adapter_id != v.adapter_id and other.adapter.visibility != "public"
    deleted = ref_text if other is None else None
    if deleted is not None and not _names_public_or_own(s, deleted, v):  # its name would tell it exists
        hidden, deleted = True, None
    return ((key, version_ref(other) if other is not None and not hidden else None),
            (f"{key}_private", True if hidden else None), (f"{key}_deleted", deleted))


def _names_public_or_own(s: Session, ref_text: str, v: m.AdapterVersion) -> bool:
    """Whether a deleted parent's recorded ref may be shown to whoever reads ``v``: a version of ``v``'s own
    adapter (under a name it has or had), or of an adapter that is still there and public. One of a private adapter,
    or of one deleted whole (whose visibility is no longer known), is not named."""
    try:
        ref = Ref.parse(ref_text)
    except (InvalidInput, ValueError):
        return False
    if (ref.owner, ref.name) == (v.adapter.owner, v.adapter.name):
        return True
    if s.scalar(select(m.AdapterMove.id).where(m.AdapterMove.owner == ref.owner, m.AdapterMove.name == ref.name,
                                               m.AdapterMove.adapter_id == v.adapter_id)) is not None:
        return True  # a name its own adapter had before it moved (`vera mv`)
    visibility = s.scalar(select(m.Adapter.visibility).where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name))
    return visibility == "public"


def move_latest(s: Session, adapter: m.Adapter) -> None:
    """Point ``latest`` at the newest version that is not yanked (or remove it when there is none)."""
    newest = s.scalar(select(m.AdapterVersion).where(m.AdapterVersion.adapter_id == adapter.id,
                                                     m.AdapterVersion.yanked.is_(False))
                      .order_by(m.AdapterVersion.version.desc()).limit(1))
    alias = s.scalar(select(m.Alias).where(m.Alias.adapter_id == adapter.id, m.Alias.name == LATEST))
    if newest is None:
        if alias is not None:
            s.delete(alias)
        return
    if alias is None:
        s.add(m.Alias(adapter_id=adapter.id, name=LATEST, version_id=newest.id))
    elif alias.version_id != newest.id:
        alias.version_id, alias.updated_at = newest.id, datetime.now(UTC)


def projection_spec(p: m.Projection) -> ProjectionSpec:
    from vera_core import ProjectionSpec

    return ProjectionSpec(p.generator, int(p.seed), p.r, p.max_in, p.max_out)


def version_tensors(blobs: BlobStore, v: m.AdapterVersion, *, with_projection: bool, budget: ProjectionBudget
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The version's tensors (with A and B if asked: stored, or regenerated from the seed) and the safetensors
    metadata its files carry (the same whatever base shapes are declared later)."""
    from safetensors.torch import load as load_safetensors

    from vera_core.checkpoint import adapter_metadata

    data = blobs.get(v.vectors_sha256)
    tensors = load_safetensors(data)
    if with_projection:
        tensors.update(projection_tensors(blobs, v.projection, budget=budget))
    return tensors, adapter_metadata(projection_spec(v.projection), v.projection_fingerprint,
                                     metadata_of(data).get(META_IN_FEATURES))


def projection_tensors(blobs: BlobStore, p: m.Projection, *, budget: ProjectionBudget) -> dict[str, torch.Tensor]:
    """A and B of a projection (under PROJECTION_KEYS): stored, or regenerated from its seed within the budget."""
    from safetensors.torch import load as load_safetensors

    from vera_core import generate

    if p.blob_sha256 is not None:
        return load_safetensors(blobs.get(p.blob_sha256))
    spec = projection_spec(p)
    with budget.generating(spec):  # also bounds versions recorded before the limit existed
        a, b = generate(spec)
    return {PROJECTION_KEYS[0]: a, PROJECTION_KEYS[1]: b}


def layer_in_features(v: m.AdapterVersion, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
                      ) -> str | None:
    """The layers' input sizes (META_IN_FEATURES JSON): recorded with the vectors or, for adapters PEFT wrote, from
    the base model's declared shapes; None when neither knows every layer."""
    if META_IN_FEATURES in metadata:
        return metadata[META_IN_FEATURES]
    sizes = declared_layers(v.base_model.shapes, tensors)
    return in_features_json(sizes) if sizes else None
