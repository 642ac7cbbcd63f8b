"""The registry seen as a read-only HuggingFace Hub: every adapter a model repo, every version a commit, so that
``huggingface_hub``, PEFT, transformers and vLLM pull adapters by name (registry/api/routes/hf.py speaks the HTTP).

Revisions (what ``revision=`` names)::

    main | latest          the newest version that is not yanked (``latest``)
    3 | v3                 version 3 (yanked versions too, as the API serves them by number)
    prod                   the version an alias points at
    <40 hex digits>        a commit: one version in one form with one revision of the adapter's card (README.md),
                           the same bytes for as long as the version exists
    <any of these>+lora    the same version as the equivalent LoRA (what `vera fetch --as lora` writes)
    ...+seed-only          without A and B (vera_core only; refused for versions the seed does not reproduce)
    ...+projection         always with A and B

Without a suffix a revision gives what a default fetch gives: files PEFT loads correctly. README.md is the Hub
model card that `vera hub push` writes. A version number wins over an alias that looks like one (``3``, ``v3``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from huggingface_hub import ModelCard

from registry.domain.errors import AdapterNotFound, EntryNotFound, InvalidInput, NotFound, RevisionNotFound
from registry.domain.schemas import COMMIT_LIKE, MAX_VERSION, VERSION_LIKE, Ref, VersionInfo
from registry.services.derived import DerivedFile, DerivedFiles, FileForm, NotBuilt, git_blob_id
from registry.services.hub import CARD_NAME, model_card
from registry.services.lookup import LATEST
from registry.services.registry import Registry
from registry.store.blobs import BlobReader
from vera_core.keys import CONFIG_NAME
from vera_core.lora_options import LoraExport

#: Revision suffixes, in the order their number is written into commit shas (never reorder; only append).
VARIANTS = ("", "lora", "seed-only", "projection")
#: Bumped whenever the bytes a revision gives change for the same version, so that new bytes get new commit shas
#: (a client's cache keys files by commit and never asks again for a commit it has).
COMMIT_FORMAT = "1"
MAX_REVISION_LENGTH = 100


@dataclass(frozen=True)
class HubRevision:
    """One version in one form, as a Hub commit: the PEFT files stored as derived blobs (built once, streamed from
    storage; registry.services.derived) and README.md, the model card written for this view; each file's size,
    SHA-256 and git blob id."""

    repo_id: str
    commit: str
    variant: str
    info: VersionInfo
    stored: dict[str, DerivedFile]
    card: bytes
    derived: DerivedFiles

    @property
    def last_modified(self) -> datetime:
        return self.info.created_at

    @property
    def names(self) -> list[str]:
        return sorted([*self.stored, CARD_NAME])

    def _check(self, name: str) -> None:
        if name != CARD_NAME and name not in self.stored:
            raise EntryNotFound(f"{self.repo_id}@{self.commit[:12]} ({self.info.ref}) has no file {name[:100]!r}; "
                                f"it has {', '.join(self.names)}.")

    def size(self, name: str) -> int:
        self._check(name)
        return len(self.card) if name == CARD_NAME else self.stored[name].size

    def sha256(self, name: str) -> str:
        self._check(name)
        return hashlib.sha256(self.card).hexdigest() if name == CARD_NAME else self.stored[name].sha256

    def source(self, name: str) -> bytes | str | BlobReader:
        """The file: the card's bytes, or a stored file as DerivedFiles.source gives it (a path or a reader)."""
        self._check(name)
        return self.card if name == CARD_NAME else self.derived.source(self.info.pinned, self.stored[name])

    def blob_id(self, name: str) -> str:
        """The file's git blob id, as the Hub reports it (``oid``, ``blobId``)."""
        self._check(name)
        if name == CARD_NAME:
            return git_blob_id([self.card], len(self.card))
        return self.derived.git_blob_id(self.info.pinned, self.stored[name])

    def card_data(self) -> dict[str, Any]:
        card = ModelCard(self.card.decode("utf-8"))
        data: dict[str, Any] = card.data.to_dict()  # type: ignore[no-untyped-call]
        return data


#: The form byte of a commit whose README carries a kept card revision (format 2); below it, format 1.
CARD_REVISION_FLAG = 0x80


def commit_of(info: VersionInfo, variant: str, card_revision: int | None = None) -> str:
    """A 40-hex commit id for one version in one form: a hash of what makes the version unique (so a version that
    is deleted and published again gets another), then the form and the version number, so that a commit can be
    resolved without a table of them. ``card_revision``: the revision of the adapter's card its README carries
    (registry.store.models.AdapterCard), written into the id too (format 2: 24 hex of hash, 6 of card revision, the
    form byte with CARD_REVISION_FLAG, 8 of version); None for an adapter whose card was never edited (format 1: 30
    hex of hash, the form, the version), the ids served before card revisions were kept, which stay valid."""
    parts = ["vera-registry hub commit", COMMIT_FORMAT, info.ref, info.vectors_sha256, info.created_at.isoformat(),
             variant]
    form = VARIANTS.index(variant)
    if card_revision is None:
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        return f"{digest[:30]}{form:02x}{info.version:08x}"
    digest = hashlib.sha256("\0".join([*parts, "card", str(card_revision)]).encode()).hexdigest()
    return f"{digest[:24]}{card_revision:06x}{CARD_REVISION_FLAG | form:02x}{info.version:08x}"


class HubView:
    """Revisions of the registry's adapters as Hub commits."""

    def __init__(self, registry: Registry, *, default_variant: str = "",
                 on_build: Callable[[], None] | None = None) -> None:
        """``default_variant``: the form of a revision without a suffix ("" = a default fetch, or "lora");
        ``on_build``: called before a revision's form is built (it may refuse: the caller's costly budget)."""
        self.registry, self.default_variant, self.on_build = registry, default_variant, on_build

    def revision(self, owner: str, name: str, revision: str) -> HubRevision:
        """The commit ``revision`` names in ``owner/name``: AdapterNotFound (the repo), RevisionNotFound or the
        registry's refusal of that form (a LoRA export of an adapter whose base shapes are unknown, ...)."""
        repo_id = f"{owner}/{name}"
        ref, variant, commit, card_at = self._parse(owner, name, revision)
        variant = variant if commit is not None else (variant or self.default_variant)
        form = FileForm(with_projection=variant == "projection", seed_only=variant == "seed-only",
                        lora=LoraExport() if variant == "lora" else None)
        try:
            try:
                info, files = self.registry.derived.manifest(ref, form, build=False)
            except NotBuilt:
                if self.on_build is not None:
                    self.on_build()
                info, files = self.registry.derived.manifest(ref, form)
        except AdapterNotFound:
            raise
        except NotFound as exc:
            raise _no_revision(repo_id, revision, exc) from exc
        try:  # the card a commit names (format 1: revision 0, the card before any kept edit), or the newest
            card_revision, card_text = self.registry.metadata.card_revision(
                Ref.of(owner, name), None if commit is None else card_at or 0)
        except AdapterNotFound:
            raise
        except NotFound as exc:
            raise RevisionNotFound(f"{repo_id} has no commit {revision}: {exc}") from exc
        if commit is None:
            commit = commit_of(info, variant, card_revision)
        elif commit != commit_of(info, variant, card_at):
            raise RevisionNotFound(f"{repo_id} has no commit {revision}; it names a version that was deleted, or "
                                   "another registry's.")
        stored = {f.filename: f for f in files if f.filename != CARD_NAME}
        config = self.registry.derived.read(info.pinned, stored[CONFIG_NAME])
        with_projection = bool(json.loads(config).get("save_projection", True))
        # a commit's bytes never change: its card shows the metrics the version was published with, not the
        # evaluations recorded since (they join a Hub push's card, a new commit)
        recorded = self.registry.evaluations.names(info.pinned)
        published = info.model_copy(update={"metrics": {k: v for k, v in info.metrics.items() if k not in recorded}})
        card = model_card(published, with_projection=with_projection or variant == "lora", as_lora=variant == "lora",
                          card=card_text, stable=True).encode("utf-8")
        return HubRevision(repo_id, commit, variant, info, stored, card, self.registry.derived)

    @staticmethod
    def _parse(owner: str, name: str, revision: str) -> tuple[Ref, str, str | None, int | None]:
        """(the version's reference, the form, the commit when the revision is one, and the card revision that
        commit names: None for a commit of format 1 and for a revision that is no commit)."""
        repo_id = f"{owner}/{name}"
        base, plus, variant = revision.partition("+")
        if len(revision) > MAX_REVISION_LENGTH or (plus and variant not in VARIANTS[1:]):
            raise RevisionNotFound(
                f"{repo_id} has no revision {revision[:MAX_REVISION_LENGTH]!r}: a revision is main, a version "
                "number (3 or v3), an alias or a commit, optionally followed by +lora, +seed-only or +projection.")
        try:
            if COMMIT_LIKE.fullmatch(base):
                number, form = int(base[32:], 16), int(base[30:32], 16)
                card_at = int(base[24:30], 16) if form & CARD_REVISION_FLAG else None
                form &= ~CARD_REVISION_FLAG
                if not plus and form < len(VARIANTS) and 1 <= number <= MAX_VERSION:
                    return Ref.of(owner, name, version=number), VARIANTS[form], base, card_at
                raise RevisionNotFound(f"{repo_id} has no commit {revision}.")
            if base == "main":
                return Ref.of(owner, name, alias=LATEST), variant, None, None
            if match := VERSION_LIKE.fullmatch(base):
                return Ref.of(owner, name, version=int(match[1])), variant, None, None
            return Ref.of(owner, name, alias=base), variant, None, None
        except InvalidInput as exc:  # owner, name or alias that cannot exist: no such repo or revision
            if not _names_ok(owner, name):
                raise AdapterNotFound(f"No adapter {repo_id[:200]}: {exc}") from exc
            raise _no_revision(repo_id, revision, exc) from exc


def _no_revision(repo_id: str, revision: str, exc: Exception) -> RevisionNotFound:
    """The 404 of a revision that names nothing: the registry's own message where it names the repo already ("a/b has
    no version 9; its version: 1", where "a/b has no revision '9': a/b has no version 9" said it twice)."""
    said = str(exc)
    if said.startswith(f"{repo_id} "):
        return RevisionNotFound(said)
    return RevisionNotFound(f"{repo_id} has no revision {revision[:MAX_REVISION_LENGTH]!r}: {said}")


def _names_ok(owner: str, name: str) -> bool:
    try:
        Ref.of(owner, name, alias=LATEST)
    except InvalidInput:
        return False
    return True
