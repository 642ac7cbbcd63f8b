"""``Registry``: the registry's services over one database and one blob store, behind one object that the API, the
CLI, Hub sync, jobs and tests use. Each operation belongs to one service module (listed below) and is one
transaction unless its docstring says why not; all return domain objects (registry.domain.schemas), never ORM
rows.

    access        registry.services.access         organisations, members, invitations (registry.services.
                                                   invitations), visibility, readability checks
    base models   registry.services.base_models    register, register_from_config(_dict), list
    publish       registry.services.publishing     publish (validation: registry.services.validation; undeclared
                                                   base shapes: registry.services.base_configs), copy_version
    versions      registry.services.versions       get, files, built, fetch, set_alias, remove_alias, yank, delete,
                                                   audit
    derived       registry.services.derived        derived.manifest, file, by_digest, source (download files built
                                                   once per version and form, stored as blobs)
    search        registry.services.search         list_versions (filters: registry.services.filters), lookup
    downloads     registry.services.downloads      downloads.count (in memory; flushed in batches by the API)
    retention     registry.services.retention      apply_retention (through versions.delete)
    metadata      registry.services.metadata       adapter, update_adapter, update_version (description, card,
                                                   tags; audited)
    lineage       registry.services.lineage        lineage (ancestors and descendants of a version)
    evaluations   registry.services.evaluations    evaluations.record, evaluations, delete (results measured
                                                   after publish, joining the version's metrics; audited)
    verification  registry.services.verification   verify, last_verification, list_projections, gc, fsck
    analysis      registry.services.analysis       compare
    status        registry.services.status         counts, readiness
"""

from __future__ import annotations

from functools import partial

from registry.domain.schemas import DERIVED_MAX_BYTES, ORGS_PER_USER, SCRATCH_BYTES, OwnerUsage
from registry.services.access import Access, Visibility
from registry.services.analysis import Analysis
from registry.services.base_configs import BaseConfigSource
from registry.services.base_models import BaseModels
from registry.services.derived import DerivedFiles
from registry.services.downloads import DownloadCounter
from registry.services.evaluations import Evaluations
from registry.services.file_cache import FileCache
from registry.services.invitations import InvitationPolicy
from registry.services.lineage import Lineage
from registry.services.metadata import Metadata
from registry.services.moves import Moves
from registry.services.publishing import Publisher
from registry.services.quotas import Quotas, clear_quota, set_quota, usage
from registry.services.retention import Retention
from registry.services.search import Search
from registry.services.status import Status, names_any_blob
from registry.services.validation import ProjectionBudget
from registry.services.verification import Verification
from registry.services.versions import Versions
from registry.store.blobs import BlobStore
from registry.store.database import Database


class Registry:
    """The registry over one database and one blob store."""

    def __init__(self, db: Database, blobs: BlobStore, *, budget: ProjectionBudget | None = None,
                 base_configs: BaseConfigSource | None = None, file_cache: FileCache | None = None,
                 default_visibility: Visibility = "public", downloads: DownloadCounter | None = None,
                 quotas: Quotas | None = None, invitations: InvitationPolicy | None = None,
                 orgs_per_user: int = ORGS_PER_USER,
                 scratch_bytes: int = SCRATCH_BYTES, derived_bytes: int = DERIVED_MAX_BYTES) -> None:
        """``budget`` bounds the size and number of projections generated at once (VERA_MAX_PROJECTION_ELEMENTS,
        VERA_CONCURRENT_GENERATIONS); the default allows 64 Mi numbers, two at a time. ``base_configs`` (the Hub,
        from open_registry) gives the layer shapes of base models nobody declared, for PEFT's seed-only adapters;
        ``file_cache`` keeps built download files (default: 256 MiB); ``default_visibility`` is that of adapters
        published without saying (VERA_DEFAULT_VISIBILITY); ``downloads`` counts downloads (the API starts and
        stops its flushing); ``quotas``: each owner's storage quota (VERA_OWNER_QUOTA_BYTES, VERA_OWNER_QUOTAS;
        default none); ``invitations``: whether adding a user to an organisation invites them, and for how long
        (VERA_ORG_INVITATIONS, VERA_ORG_INVITATION_DAYS; default: off, a user added is a member at once);
        ``orgs_per_user``: how many organisations a user may have created, and create or rename a day
        (VERA_ORGS_PER_USER; registry.services.access.Access);
        ``scratch_bytes``: what a read-only registry keeps of the forms it builds itself (VERA_READ_ONLY_SCRATCH_BYTES,
        default 4 GiB); ``derived_bytes``: the most the built download forms of all versions keep stored
        (VERA_DERIVED_MAX_BYTES, default 32 GiB)."""
        self.db, self.blobs = db, blobs
        blobs.guard_writes(partial(names_any_blob, db))  # no write lands on storage that is not mounted
        self.budget = budget = budget or ProjectionBudget()
        self.base_models = BaseModels(db)
        self.versions = Versions(db, blobs, budget=budget, cache=file_cache)
        self.derived = DerivedFiles(db, blobs, self.versions, scratch_bytes=scratch_bytes, max_bytes=derived_bytes)
        self.search = Search(db)
        self.verification = Verification(db, blobs, budget=budget)
        self.analysis = Analysis(db, blobs, budget=budget)
        self.status = Status(db, blobs)
        self.register_base_model = self.base_models.register
        self.register_base_model_from_config = self.base_models.register_from_config
        self.register_base_model_from_config_dict = self.base_models.register_from_config_dict
        self.list_base_models = self.base_models.list
        self.remove_base_model = self.base_models.remove
        self.quotas = quotas = quotas or Quotas()
        publisher = Publisher(db, blobs, self.base_models, budget=budget, base_configs=base_configs,
                              default_visibility=default_visibility, quotas=quotas)
        self.publish, self.copy_version = publisher.publish, publisher.copy
        self.access, self.default_visibility = Access(db, invitations, orgs_per_user), default_visibility
        self.get = self.versions.get
        self.vera_config = self.versions.vera_config
        self.files = self.versions.files
        self.built = self.versions.built
        self.fetch = self.versions.fetch
        self.set_alias = self.versions.set_alias
        self.remove_alias = self.versions.remove_alias
        self.yank = self.versions.yank
        self.delete = self.versions.delete
        self.delete_adapter = self.versions.delete_adapter
        self.moves = Moves(db, quotas)
        self.move = self.moves.move
        self.audit = self.versions.audit
        self.list_versions = self.search.list_versions
        self.lookup = self.search.lookup
        self.downloads = downloads or DownloadCounter(db)
        retention = Retention(db, self.versions)
        self.apply_retention, self.apply_retention_rules = retention.apply, retention.apply_rules
        self.preview_retention = retention.preview
        self.metadata = Metadata(db)
        self.evaluations = Evaluations(db)
        self.adapter = self.metadata.adapter
        self.update_adapter = self.metadata.update_adapter
        self.update_version = self.metadata.update_version
        self.lineage = Lineage(db).graph
        self.verify = self.verification.verify
        self.last_verification = self.verification.last_verification
        self.list_projections = self.verification.list_projections
        self.gc = self.verification.gc
        self.fsck = self.verification.fsck
        self.compare = self.analysis.compare

    def usage(self, owner: str, *, known: bool = False) -> OwnerUsage:
        """What ``owner``'s adapters store, and its quota (registry.services.quotas); ``known``: the caller's own
        name, answered even when no token, organisation or adapter has it."""
        return usage(self.db, self.quotas, owner, known=known)

    def set_quota(self, owner: str, quota_bytes: int | None, *, actor: str) -> OwnerUsage:
        """Set ``owner``'s quota over the settings' (None: no quota), until ``clear_quota``."""
        return set_quota(self.db, self.quotas, owner, quota_bytes, actor=actor)

    def clear_quota(self, owner: str, *, actor: str = "operator") -> OwnerUsage:
        """Drop the quota an admin set for ``owner``: the settings' holds again."""
        return clear_quota(self.db, self.quotas, owner, actor=actor)
