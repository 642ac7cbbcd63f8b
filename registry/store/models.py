"""ORM models of the registry database (SQLAlchemy 2.x, typed). The database holds metadata only; bytes live
in content-addressed blob storage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from registry.domain.events import sight_of
from registry.domain.schemas import JobStatus, VerificationStatus
from registry.store.database import insert_missing


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores none: it is re-attached on read). Written and
    read as UTC whatever the session's time zone: PostgreSQL answers in its own (a database set to America/New_York
    gave 14:39-05:00), which SQLite, storing no zone, kept as 14:39 UTC, five hours off (`vera db copy` from such a
    database; a re-check's finding, session 34)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo is not None else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Blob(Base):
    """A stored byte string, named by its SHA-256; referenced by versions and projections."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))  # vectors | projection | dataset | derived | checkpoint
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def record_blob(s: Session, sha256: str, size: int, kind: str) -> None:
    """Record blob ``sha256`` unless it is recorded (its first kind stays): one statement, so that two writers
    recording the same bytes at once (two versions' equal derived files built together, one dataset sent twice)
    both succeed instead of one failing on the key."""
    insert_missing(s, Blob.__table__, {"sha256": sha256, "size": size, "kind": kind}, ["sha256"])


class BaseModelShapes(Base):
    """A base model: name (Hub id or local name), revision, and the shapes of its adaptable layers."""

    __tablename__ = "base_models"
    __table_args__ = (UniqueConstraint("name", "revision", name="uq_base_models_name_revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    revision: Mapped[str] = mapped_column(String(100), default="")
    # {module path: [out_features, in_features | null]}; in_features is unknown when implied by an adapter
    shapes: Mapped[dict[str, Any]] = mapped_column(JSON)
    shapes_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    shapes_source: Mapped[str] = mapped_column(String(16))  # declared | implied
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Projection(Base):
    """One shared projection: every version with the same (generator, seed, r, shapes) points here.

    A projection the seed regenerates exactly is never stored (``blob_sha256`` is null); one that cannot be
    regenerated is stored once, content-addressed, and marked not reproducible.
    """

    __tablename__ = "projections"
    __table_args__ = (
        UniqueConstraint("generator", "seed", "r", "max_in", "max_out", "fingerprint", name="uq_projections_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generator: Mapped[str] = mapped_column(String(64))
    seed: Mapped[str] = mapped_column(String(20))  # a uint64 as decimal text (exceeds signed BIGINT)
    r: Mapped[int] = mapped_column(Integer)
    max_in: Mapped[int] = mapped_column(Integer)
    max_out: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    reproducible: Mapped[bool] = mapped_column(Boolean)
    blob_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Adapter(Base):
    """``owner/name``: a line of immutable versions."""

    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_adapters_owner_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    # 0009: the model card (Markdown), like a Hub repo's README.md; editable, never part of a version's bytes
    card: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # 0007: public (whoever may read the registry) or private (the owner, its organisation's members, admins)
    visibility: Mapped[str] = mapped_column(String(8), default="public", server_default="public")
    # 0034: the owner's retention rule for its versions (registry.services.retention.Retention.apply_rules): keep the
    # newest N and/or those published in the last D days; both None: no rule of its own
    retention_keep_last: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retention_keep_days: Mapped[float | None] = mapped_column(Float, nullable=True)
    versions: Mapped[list[AdapterVersion]] = relationship(back_populates="adapter", order_by="AdapterVersion.version")

    @property
    def retention(self) -> dict[str, Any] | None:
        """The retention rule as the API says it ({"keep_last": N, "keep_days": D}, the parts set), or None."""
        rule = {"keep_last": self.retention_keep_last, "keep_days": self.retention_keep_days}
        return {part: value for part, value in rule.items() if value is not None} or None

    @retention.setter
    def retention(self, rule: dict[str, Any] | None) -> None:
        self.retention_keep_last = (rule or {}).get("keep_last")
        self.retention_keep_days = (rule or {}).get("keep_days")


class VersionCounter(Base):
    """The highest version number ``owner/name`` has ever had (0015): kept when versions, and the adapter, are
    deleted, so that no number is given twice."""

    __tablename__ = "version_counters"
    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class AdapterMove(Base):
    """A name an adapter had before it moved (0017): asking for it is answered with the adapter's name now (to who
    may read it), and publishing to it is refused, until an adapter moves back to that name."""

    __tablename__ = "adapter_moves"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_adapter_moves_owner_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", name="fk_adapter_moves_adapter_id_adapters", ondelete="CASCADE"), index=True)
    moved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    moved_by: Mapped[str] = mapped_column(String(64))


class OwnerQuota(Base):
    """A storage quota an admin set for an owner namespace (0018; registry.services.quotas): it overrides the
    settings' (VERA_OWNER_QUOTAS, VERA_OWNER_QUOTA_BYTES) until it is cleared; ``quota_bytes`` None: no quota."""

    __tablename__ = "owner_quotas"
    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AdapterCard(Base):
    """A model card as it was after an edit (0014), so that the /hf README.md of a Hub commit, which carries the
    card, is the same bytes for as long as the commit is served (registry.services.hub_view). Revision 0 is the card
    before its first edit (what commits of format 1 served), written with revision 1 by that edit; an adapter whose
    card was never edited has no rows. Adapter.card is always the newest revision's text."""

    __tablename__ = "adapter_cards"
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    card: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AdapterVersion(Base):
    """One immutable version, keyed by base model, rank, seed and generator, with what was measured of it."""

    __tablename__ = "adapter_versions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "version", name="uq_adapter_versions_adapter_version"),
        Index("ix_adapter_versions_key", "base_model_id", "r", "seed", "generator"),
        # listings sorted by a column walk (column, id) and stop after one page
        Index("ix_adapter_versions_r_id", "r", "id"),
        Index("ix_adapter_versions_trainable_id", "trainable_parameters", "id"),
        Index("ix_adapter_versions_stored_id", "stored_bytes", "id"),
        Index("ix_adapter_versions_verification_id", "verification_status", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"), index=True)
    projection_id: Mapped[int] = mapped_column(ForeignKey("projections.id"), index=True)
    r: Mapped[int] = mapped_column(Integer, index=True)
    seed: Mapped[str] = mapped_column(String(20))
    generator: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # adapter_config.json as published
    vectors_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    projection_fingerprint: Mapped[str] = mapped_column(String(64))
    seed_reproducible: Mapped[bool] = mapped_column(Boolean)
    trainable_parameters: Mapped[int] = mapped_column(BigInteger)
    adapter_parameters: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    published_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    # 0033: why it was yanked, as its publisher said (None: no reason given, or not yanked)
    yank_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    verification_status: Mapped[VerificationStatus] = mapped_column(String(16), default="unverified")
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    verification_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # lineage
    source_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_hub_repo: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source_hub_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # 0009: the version this one was fine-tuned from (set to NULL by Versions.delete when that one is deleted;
    # parent_ref keeps what it was called; no foreign key, like source_job_id, so that SQLite never has to rebuild
    # this table), the code that made it, and the dataset it was trained on (from its job)
    parent_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    parent_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    code_revision: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dataset_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dataset_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # 0022: the trusted publisher's CI run that published it (its token's provenance), None otherwise
    published_via: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # 0032: the version this one is a copy of (`vera cp`; set to NULL when that one is deleted, copied_from_ref
    # keeping what it was called; no foreign key, as parent_version_id)
    copied_from_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    copied_from_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)

    adapter: Mapped[Adapter] = relationship(back_populates="versions")
    base_model: Mapped[BaseModelShapes] = relationship()
    projection: Mapped[Projection] = relationship()
    tags: Mapped[list[VersionTag]] = relationship(cascade="all, delete-orphan", order_by="VersionTag.tag")
    properties: Mapped[list[VersionProperty]] = relationship(cascade="all, delete-orphan",
                                                             order_by="VersionProperty.key")
    params: Mapped[list[VersionParam]] = relationship(cascade="all, delete-orphan", order_by="VersionParam.key")


class VersionTag(Base):
    __tablename__ = "version_tags"
    __table_args__ = (Index("ix_version_tags_tag", "tag"),)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class VersionProperty(Base):
    """A key=value property of a version (MLflow's model-version tags, SageMaker's metadata properties): what a team
    records after the fact, such as ``validation=passed``; filtered as ``properties.<key>``."""

    __tablename__ = "version_properties"
    __table_args__ = (Index("ix_version_properties_key_value", "key", "value"),)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", name="fk_version_properties_version_id_adapter_versions",
                   ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))


class VersionParam(Base):
    """A parameter a version was trained with (``lr=0.01``: MLflow's run params), recorded at publish and never
    changed (migration 0029); filtered as ``params.<key>``."""

    __tablename__ = "version_params"
    __table_args__ = (Index("ix_version_params_key_value", "key", "value"),)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", name="fk_version_params_version_id_adapter_versions", ondelete="CASCADE"),
        primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))


class Alias(Base):
    """A movable name for a version of one adapter (``latest`` always exists while a version does)."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("adapter_id", "name", name="uq_aliases_adapter_name"),
                      # a version's aliases by its id: every listing page, and a version's delete (migration 0027)
                      Index("ix_aliases_version_id", "version_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AccessToken(Base):
    """A bearer token, stored as its SHA-256 only, with an owner and scopes."""

    __tablename__ = "access_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # None: never (migration 0005)
    # 0007: the owner namespaces the token is limited to (None: all the user may reach)
    limited_to: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # 0020: the token whose caller made this one through the API (None: the operator's, or made before 0020);
    # revoking a token revokes those made from it
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    # 0022: for a token minted by trusted publishing, what it was minted for (publisher, issuer, subject, claims)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Organization(Base):
    """An owner namespace shared by its members (migration 0007); users and organisations share one namespace."""

    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    members: Mapped[list[Membership]] = relationship(cascade="all, delete-orphan", order_by="Membership.member")
    invitations: Mapped[list[OrgInvitation]] = relationship(cascade="all, delete-orphan",
                                                            order_by="OrgInvitation.member")
    protected_aliases: Mapped[list[ProtectedAlias]] = relationship(cascade="all, delete-orphan",
                                                                   order_by="ProtectedAlias.name")


class ProtectedAlias(Base):
    """An alias name that, in every adapter of the organisation, only its admins point, remove or take away by
    deleting the version it names (migration 0024; registry.services.access.Access.protect_alias): a release
    alias such as ``prod`` that writers may not move."""

    __tablename__ = "protected_aliases"
    organization_id: Mapped[int] = mapped_column(ForeignKey(
        "organizations.id", name="fk_protected_aliases_organization_id_organizations", ondelete="CASCADE"),
        primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Membership(Base):
    """A user's role in an organisation: read, write or admin (registry.services.tokens.Role)."""

    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_member", "member"),)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(8))
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OrgInvitation(Base):
    """An invitation to join an organisation (0019; VERA_ORG_INVITATIONS, registry.services.invitations): ``member``
    becomes a member with ``role`` by accepting it before ``expires_at``; one per organisation and user."""

    __tablename__ = "org_invitations"
    __table_args__ = (Index("ix_org_invitations_member", "member"),)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", name="fk_org_invitations_organization_id_organizations", ondelete="CASCADE"),
        primary_key=True)
    member: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(8))
    invited_by: Mapped[str] = mapped_column(String(64))
    invited_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Job(Base):
    """A fine-tune job, queued in the database and claimed by workers."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[JobStatus] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(64))
    target_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dataset_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("blobs.sha256", name="fk_jobs_dataset_sha256_blobs"), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # 0006: workers claim higher priorities first; a job stops (failed) after time_limit_s of training; a job whose
    # worker died is claimable again only from not_before (backoff)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    time_limit_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # 0011: GPUs the job's training needs; only a worker that owns that many claims it (0: any worker)
    gpus: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # 0016: the member whose organisation role allowed the submission (None: the owner or an administrator); the job
    # publishes only while that member still writes in the organisation
    submitted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # 0022: for a job submitted with a token minted by trusted publishing, that token's provenance: its result
    # records it as published_via
    submitted_via: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # 0023: who submitted it (a token's user, an administrator, `local`): named as the publisher of what it publishes
    # (None: submitted before 0023, published as submitted_by or else the owner)
    requested_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # 0030: what its result is labelled with, as its submitter asked: {"tags": [...], "description": "...",
    # "properties": {...}} (None: nothing asked, or submitted before 0030)
    result_labels: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class JobCheckpoint(Base):
    """The newest training checkpoint a job's worker stored in the registry, so that an attempt on another machine
    resumes from it (registry.services.job_checkpoints); one per job, replaced as training goes on, removed when the
    job ends (0013)."""

    __tablename__ = "job_checkpoints"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    world_size: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobCheckpointFile(Base):
    """A file of a job's stored checkpoint (its manifest included), a content-addressed blob of kind
    ``checkpoint`` (0013)."""

    __tablename__ = "job_checkpoint_files"
    job_id: Mapped[int] = mapped_column(ForeignKey("job_checkpoints.job_id", ondelete="CASCADE"), primary_key=True)
    filename: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class JobEvent(Base):
    """A job's history: progress steps, evaluations and log lines, in order."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # step | evaluate | log
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class HubSync(Base):
    """A version pushed to, or pulled from, a HuggingFace Hub repo at one commit (tokens are never stored)."""

    __tablename__ = "hub_syncs"
    __table_args__ = (Index("ix_hub_syncs_repo", "endpoint", "repo_id", "commit_sha"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # push | pull
    endpoint: Mapped[str] = mapped_column(String(200))
    repo_id: Mapped[str] = mapped_column(String(200))
    revision: Mapped[str] = mapped_column(String(200))  # the branch or revision asked for
    commit_sha: Mapped[str] = mapped_column(String(64))
    with_projection: Mapped[bool] = mapped_column(Boolean)  # A and B in the files pushed or pulled
    format: Mapped[str] = mapped_column(String(8))  # vera | lora (the equivalent LoRA, pushed for LoRA servers)
    content_sha256: Mapped[str] = mapped_column(String(64))  # over the adapter files, to see what changed
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEvent(Base):
    """Publishes, deletes, yanks and alias moves: who did what, when."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_owner_adapter", "owner", "adapter_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # who may see it, derived from action and target when the row is written (migration 0031 filled older rows):
    # registry.domain.events.sight_of; NULL (never written so) is shown to the registry's administrators alone
    sight: Mapped[str | None] = mapped_column(String(12), default=lambda ctx: _sight(ctx)[0])
    owner: Mapped[str | None] = mapped_column(String(200), default=lambda ctx: _sight(ctx)[1])
    adapter_name: Mapped[str | None] = mapped_column(String(200), default=lambda ctx: _sight(ctx)[2])


def _sight(context: Any) -> tuple[str, str | None, str | None]:
    """The sight columns of the audit event being inserted, from its action and target."""
    given = context.get_current_parameters()
    return sight_of(given["action"], given["target"])


class Webhook(Base):
    """An owner namespace's webhook (migration 0008): the events of its adapters, POSTed to ``url`` and signed with
    ``secret`` (kept as given: it signs every delivery; shown once, when the webhook is created)."""

    __tablename__ = "webhooks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[Any]] = mapped_column(JSON)  # audit actions it fires for (registry.domain.events)
    secret: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # fires for audit events after this one: those recorded after the webhook was created
    after_event_id: Mapped[int] = mapped_column(Integer, default=0)


class WebhookDelivery(Base):
    """One event to send to one webhook: the outbox row that dispatchers claim (pending -> sending -> succeeded |
    failed; a sending row whose dispatcher died is due again at ``next_attempt_at``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the audit event; None: a test delivery
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    webhook: Mapped[Webhook] = relationship()


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: what the receiver answered, how long it took, or what went wrong."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class WebhookCursor(Base):
    """How far dispatchers have turned audit events into deliveries (one row; moved by compare-and-set, so that
    several API processes never enqueue an event twice)."""

    __tablename__ = "webhook_cursors"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class VersionMetric(Base):
    """One numeric metric of a version (nested keys dotted), copied from AdapterVersion.metrics at publish so that
    searches filter and sort by metrics through an index on every database (0010)."""

    __tablename__ = "version_metrics"
    __table_args__ = (Index("ix_version_metrics_key_value", "key", "value", "version_id"),)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class VersionEvaluation(Base):
    """An evaluation recorded after publish: its numbers are in AdapterVersion.metrics under ``name`` (and in
    version_metrics, dotted), this row says who recorded them, when, and how they were measured (0021)."""

    __tablename__ = "version_evaluations"
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class VersionDownloads(Base):
    """How many times a version's weights were downloaded: API processes count in memory and add their counts here
    in batches (0010)."""

    __tablename__ = "version_downloads"
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"), primary_key=True)
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class VersionFile(Base):
    """A file a download builds from a version in one form (the seed-only VeRA folder, with projections, as LoRA
    with given options), stored once as a content-addressed blob (kind ``derived``) and served from storage after
    that: ``form`` names the download options (registry.services.derived.FileForm.key) (0012)."""

    __tablename__ = "version_files"
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"), primary_key=True)
    form: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def _never_reused() -> None:
    """Every table whose rows have an integer id of their own (a lone ``id`` primary key) is AUTOINCREMENT on SQLite
    (migration 0028), so that an id is never given twice, as PostgreSQL's sequences never give one twice: without it
    SQLite gives the id of a deleted row that had the highest one again (a webhook's delivery ids, a job's result
    version). A table added later gets it from here, and test_migration_0028 holds its migration to it."""
    for table in Base.metadata.tables.values():
        if [column.name for column in table.primary_key] == ["id"]:
            table.dialect_kwargs["sqlite_autoincrement"] = True


_never_reused()
