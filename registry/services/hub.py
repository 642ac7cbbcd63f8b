"""HuggingFace Hub sync: push a version to a Hub repo in PEFT's format with a model card, pull any PEFT VeRA adapter
from a Hub repo into the registry, and keep each version's sync state (pushed where, at which commit; pulled from
where).

All Hub traffic goes through ``huggingface_hub`` (HfApi.create_repo / create_commit / model_info, hf_hub_download).
A Hub token is used for the call and forgotten: never stored, printed or logged. A failed call records nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData, hf_hub_download
from huggingface_hub import errors as hub_errors
from huggingface_hub.repocard import metadata_load
from huggingface_hub.utils._validators import validate_repo_id
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.domain.errors import ContentTooLarge, HubError, InvalidInput, RegistryError
from registry.domain.metric_names import flat_metrics, metric_text
from registry.domain.schemas import (
    MAX_PARAMS,
    MAX_UPLOAD_BYTES,
    HubSyncInfo,
    HubSyncResult,
    Ref,
    VersionInfo,
    check_json,
    check_params,
    check_plain,
    check_text,
    json_object,
)
from registry.services.hub_http import CHECK_ENDPOINT, capped_downloads
from registry.services.lookup import version_info
from registry.services.publishing import MAX_METRICS_BYTES
from registry.services.registry import Registry
from registry.store import models as m
from vera_core.config import PEFT_GENERATOR, VERA_PEFT_TYPES, VeraConfig
from vera_core.errors import printable
from vera_core.keys import CONFIG_NAME, WEIGHTS_NAME

CARD_NAME = "README.md"
PUSHED_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: A pulled repo's README.md is read (for the metrics its card lists) up to this size; a larger one is not fetched.
MAX_PULLED_CARD_BYTES = 2**20
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: The most a pull reads of the Hub's answer listing a repo's files (a list of 100,000 files is about 10 MiB).
MAX_MODEL_INFO_BYTES = 64 << 20


def content_digest(files: dict[str, bytes]) -> str:
    """SHA-256 over the adapter's config and weights (not the card): equal digests, equal adapters."""
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def _user_card(card: str) -> tuple[dict[str, Any], str]:
    """The adapter's own model card split into its YAML metadata (a front matter, if it has a valid one) and its
    Markdown text."""
    if not card.strip():
        return {}, ""
    try:
        parsed = ModelCard(card, ignore_metadata_errors=True)
    except (ValueError, yaml.YAMLError):  # a front matter that is not YAML: the card goes out as it was written
        return {}, card.strip()
    data: dict[str, Any] = parsed.data.to_dict()  # type: ignore[no-untyped-call]
    return data, parsed.text.strip()


def stable_lineage(info: VersionInfo) -> dict[str, Any]:
    """The part of a version's lineage that never changes: what its row recorded, with the parent named only when
    it is a version of the same adapter (its ref, also once deleted), and so the version a copy copies (or another
    registry's). A parent of another adapter is left out: that adapter can be made private or deleted later, which
    changes what VersionInfo.lineage says of it."""
    linked = ("parent", "copied_from")
    lineage = {k: v for k, v in info.lineage.items() if k not in {f"{key}{end}" for key in linked
                                                                  for end in ("", "_deleted", "_private")}}
    for key in reversed(linked):  # the version a copy copies, likewise (a re-check's finding, session 46: a
        # commit's README said the source's name or not as its adapter's visibility changed); another registry's,
        # as stated at publish, never changes
        other = info.lineage.get(key) or info.lineage.get(f"{key}_deleted")
        if isinstance(other, str) and (other.startswith(f"{info.owner}/{info.name}:") or "://" in other):
            lineage = {key: other, **lineage}
    return lineage


def model_card(info: VersionInfo, *, with_projection: bool, as_lora: bool = False, card: str = "",
               stable: bool = False) -> str:
    """README.md for the Hub: metadata the Hub indexes (library, base model, tags) plus everything needed to
    reproduce and verify the adapter, under ``vera_registry``. ``card`` is the adapter's own model card: its text
    comes first and its metadata is kept (tags joined; the registry's keys win). The same version, options and card
    give the same bytes; ``stable`` (the /hf view's commits): the same bytes for as long as the version exists, its
    lineage as stable_lineage gives it."""
    user_data, user_text = _user_card(card)
    record: dict[str, Any] = {
        "version": info.ref, "base_model": info.base_model, "base_revision": info.base_revision or None,
        "r": info.r, "projection_prng_key": info.seed, "projection_generator": info.generator,
        "projection_fingerprint": info.projection_fingerprint, "projections_included": with_projection,
        "trainable_parameters": info.trainable_parameters, "adapter_parameters": info.adapter_parameters,
        "metrics": info.metrics, "lineage": stable_lineage(info) if stable else info.lineage,
        "format": "lora" if as_lora else "vera",
    }
    if info.params:  # what it was trained with (left out when none: the cards of older versions keep their bytes)
        record["params"] = info.params
    tags = ["lora", "vera-as-lora", "peft", "vera-registry"] if as_lora else ["vera", "peft", "vera-registry"]
    own_tags = user_data.pop("tags", None)
    tags += [t for t in (own_tags if isinstance(own_tags, list) else []) if isinstance(t, str) and t not in tags]
    data = ModelCardData(**{**user_data, "library_name": "peft", "tags": tags, "vera_registry": record})
    if "/" in info.base_model:  # the Hub checks base_model against its repos: only give it what looks like one
        data.base_model = info.base_model
    loading = ("PEFT regenerates nothing: A and B are in the file." if with_projection else
               "This copy is seed-only: A and B are regenerated from the seed.")
    if as_lora:
        loading = (f"This repo holds the **equivalent rank-{info.r} LoRA** (lora_B @ lora_A equals VeRA's delta "
                   "weight), for LoRA-only servers such as vLLM and LoRAX; any LoRA tool loads it.")
    peft_note = ""
    if not (with_projection or as_lora) and info.generator != PEFT_GENERATOR:
        peft_note = (f"\n> **PEFT cannot load this copy**: generator `{info.generator}` is not PEFT's, so PEFT "
                     "could not regenerate its projections, and its adapter_config.json makes PEFT stop with a "
                     "message saying so. Load it with `vera_core`, or push it with projections.\n")
    metrics = "".join(f"| {_cell(k)} | {_cell(_metric_cell(v))} |\n" for k, v in flat_metrics(info.metrics))
    params = "".join(f"| {k} | {_cell(v)} |\n" for k, v in info.params.items())
    heading = "##" if user_text else "#"  # under the adapter's own card, the registry's part is a section of it
    body = (
        (f"{user_text}\n\n" if user_text else "")
        + f"{heading} {info.owner}/{info.name} ({'VeRA as LoRA' if as_lora else 'VeRA'}, version {info.version})\n\n"
        f"A [VeRA](https://arxiv.org/abs/2310.11454) adapter of `{info.base_model}`, rank {info.r}, "
        f"{info.adapter_parameters:,} adapter parameters ({info.trainable_parameters:,} trainable with heads). "
        f"{loading}\n{peft_note}\n"
        "```python\nfrom peft import PeftModel\n\n"
        f"model = PeftModel.from_pretrained(base_model, \"<this repo>\")\n```\n\n"
        "| projection | |\n|---|---|\n"
        f"| generator | `{info.generator}` |\n| seed (projection_prng_key) | {info.seed} |\n"
        f"| fingerprint (SHA-256) | `{info.projection_fingerprint}` |\n\n"
        "`vera inspect --verify <folder>` proves the seed regenerates the projections the adapter was trained with.\n"
        + (f"\n| metric | value |\n|---|---|\n{metrics}" if metrics else "")
        + (f"\n| trained with | value |\n|---|---|\n{params}" if params else "")
        + f"\nPublished from vera-registry as `{info.ref}`.\n"
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


class HubSync:
    """Push and pull between this registry and a HuggingFace Hub (``endpoint``), and the sync state of versions."""

    def __init__(self, registry: Registry, *, endpoint: str = "https://huggingface.co", token: str | None = None,
                 timeout_s: float = 60.0, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.registry, self.endpoint, self._default_token = registry, endpoint.rstrip("/"), token
        self.timeout_s, self.max_bytes = timeout_s, max_bytes

    def _api(self, token: str | None) -> HfApi:
        return HfApi(endpoint=self.endpoint, token=token or False,
                     library_name="vera-registry")

    # ---- push ----------------------------------------------------------------------------------------------
    def _token(self, token: str | None, server_token: bool) -> str | None:
        """The caller's Hub token; else the server's, only where the caller may use it (the ``hub`` scope)."""
        return token or (self._default_token if server_token else None)

    def push(self, ref: str | Ref, repo_id: str, *, actor: str, token: str | None = None, revision: str = "main",
             private: bool = False, with_projection: bool = True, as_lora: bool = False,
             server_token: bool = True) -> HubSyncResult:
        """Push a version to ``repo_id`` in PEFT's format (A and B materialised unless ``with_projection=False``;
        ``as_lora``: the equivalent LoRA) with a model card. Re-pushing what the repo holds makes no commit.
        Without ``token``, the server's Hub token is used if ``server_token``."""
        _check_repo(repo_id, revision)
        token = self._token(token, server_token)
        with_projection = with_projection or as_lora
        info, files = self.registry.files(ref, with_projection=with_projection and not as_lora,
                                          seed_only=not with_projection, as_lora=as_lora)
        card = self.registry.adapter(Ref(owner=info.owner, name=info.name)).card
        from vera_core.checkpoint import peft_problems  # torch, which building the files has imported

        files[CARD_NAME] = model_card(info, with_projection=with_projection, as_lora=as_lora, card=card).encode()
        problems = [] if as_lora else peft_problems(VeraConfig.from_peft_dict(json.loads(files[CONFIG_NAME])))
        notes = [f"PEFT cannot load this copy (it stops with a message saying so): {p}" for p in problems]
        api = self._api(token)
        with self._hub_errors(f"pushing {info.ref} to {repo_id}", repo_id, pushing=True):
            try:
                before = api.model_info(repo_id, revision=revision).sha
            except hub_errors.RepositoryNotFoundError:  # (creating only when missing also keeps clear of
                api.create_repo(repo_id, private=private, exist_ok=True)  # create_repo's exist_ok fallbacks)
                before = api.model_info(repo_id, revision=revision).sha
            commit = api.create_commit(
                repo_id, operations=[CommitOperationAdd(name, files[name]) for name in PUSHED_FILES],
                commit_message=f"vera-registry: {info.ref}", revision=revision,
                commit_description=f"VeRA adapter {info.ref} (r={info.r}, seed={info.seed}, {info.generator}).")
        sha = _commit_id(f"pushing {info.ref} to {repo_id}", commit.oid)
        with self.registry.db.session() as s:
            version = self._version_row(s, info)
            row = s.scalar(select(m.HubSync).where(
                m.HubSync.version_id == version.id, m.HubSync.direction == "push", m.HubSync.endpoint == self.endpoint,
                m.HubSync.repo_id == repo_id, m.HubSync.commit_sha == sha))
            if row is None:
                row = m.HubSync(version_id=version.id, direction="push", endpoint=self.endpoint, repo_id=repo_id,
                                revision=revision, commit_sha=sha, with_projection=with_projection,
                                format="lora" if as_lora else "vera", content_sha256=content_digest(files),
                                actor=actor)
                s.add(row)
                s.add(m.AuditEvent(actor=actor, action="hub_push", target=info.ref,
                                   detail={"repo_id": repo_id, "commit": sha, "endpoint": self.endpoint}))
                s.flush()
            return HubSyncResult(sync=self._sync_info(row, info.ref), changed=sha != before, version=info,
                                 peft_loadable=not notes, notes=notes)

    # ---- pull ----------------------------------------------------------------------------------------------
    def pull(self, repo_id: str, *, target: str, actor: str, token: str | None = None, revision: str = "main",
             base_model: str | None = None, base_revision: str | None = None,
             server_token: bool = True) -> HubSyncResult:
        """Record the PEFT VeRA adapter in ``repo_id`` at ``revision`` as the next version of ``target``
        (``owner/name``). A revision already pulled, or files equal to a version already pulled, make no version.
        Without ``token``, the server's Hub token is used if ``server_token``."""
        _check_repo(repo_id, revision)
        token = self._token(token, server_token)
        ref = Ref.parse(target)
        if ref.version is not None or ref.alias is not None:
            raise InvalidInput(f"Pull into an adapter, owner/name, not a version ({target!r}).")
        if base_model is not None:  # refused here, before the Hub is asked anything, as the publish would refuse it
            check_text(base_model, "base_model", max_length=200)
        if base_revision is not None:
            check_text(base_revision, "base_revision", max_length=100)
        where = f"{repo_id}@{revision}"
        commit, sizes = self._vera_repo_at(repo_id, revision, token)
        with self.registry.db.session() as s:
            done = self._pulled(s, ref, repo_id, commit=commit)
            if done is not None:
                return done
        with_card, notes = _card_wanted(where, sizes)
        with tempfile.TemporaryDirectory(prefix="vera-hub-pull-") as tmp:
            root = Path(tmp)
            self._download(repo_id, commit, token, root, where=where, with_card=with_card)
            config = _vera_config(where, root / CONFIG_NAME)
            files = {name: (root / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}
            digest = content_digest(files)
            with self.registry.db.session() as s:
                done = self._pulled(s, ref, repo_id, commit=commit, content=digest, revision=revision, actor=actor)
                if done is not None:
                    return done
            base = base_model or config.get("base_model_name_or_path")
            if not base:
                raise InvalidInput(f"{where}'s adapter_config.json names no base_model_name_or_path; pass the base "
                                   "model (--base-model).")
            if base_model is None and _local_path(str(base)):
                raise InvalidInput(f"{where}'s adapter_config.json names base model {base!r}, a folder on the machine "
                                   "that trained it (PEFT records where it loaded the base from), not a name servers "
                                   "of that base know; pass the base model's name (--base-model, e.g. its Hub id).")
            card = _card_record(root / CARD_NAME)

            recorded: list[int] = []

            def record(s: Session, version: m.AdapterVersion) -> None:
                row = m.HubSync(version_id=version.id, direction="pull", endpoint=self.endpoint, repo_id=repo_id,
                                revision=revision, commit_sha=commit, content_sha256=digest, actor=actor,
                                format="vera", with_projection=bool(config.get("save_projection")))
                s.add(row)
                s.flush()
                recorded.append(row.id)

            with _named_as(root, where):
                info = self.registry.publish(
                    root, owner=ref.owner, name=ref.name, base_model=str(base),
                    base_revision=base_revision if base_revision is not None else str(config.get("revision") or ""),
                    metrics=_card_metrics(card.get("metrics")), params=_card_params(card.get("params")),
                    description=f"Pulled from {self.endpoint}/{repo_id} at {commit}.", published_by=actor,
                    lineage={"hub_repo": repo_id, "hub_commit": commit}, on_record=record)
        with self.registry.db.session() as s:
            row = s.get_one(m.HubSync, recorded[-1])  # written in the publish transaction
            return self._pull_result(row, info, changed=True, notes=notes)

    def _download(self, repo_id: str, commit: str, token: str | None, folder: Path, *, where: str,
                  with_card: bool) -> None:
        """The adapter's files of ``commit`` into ``folder``, held to the upload limit together, and its card
        (``with_card``) to its own bound (capped_downloads: whatever sizes the Hub declared)."""
        for names, limit, setting in (((CONFIG_NAME, WEIGHTS_NAME), self.max_bytes, "VERA_MAX_UPLOAD_BYTES"),
                                      ((CARD_NAME,) if with_card else (), MAX_PULLED_CARD_BYTES, "a card's")):
            with self._hub_errors(f"downloading {where}", repo_id), capped_downloads(
                    limit, f"pulling {where}", setting, timeout_s=self.timeout_s) as budget:
                for name in names:
                    budget.file = name
                    hf_hub_download(repo_id, name, revision=commit, endpoint=self.endpoint, token=token or False,
                                    local_dir=folder, cache_dir=folder / ".cache", library_name="vera-registry")

    def _vera_repo_at(self, repo_id: str, revision: str, token: str | None) -> tuple[str, dict[str, int | None]]:
        """The commit ``revision`` names and the repo's files with the sizes the Hub declares, once the repo is known
        to hold a VeRA adapter in safetensors within the size limit (from those sizes, before anything is
        downloaded: the downloads are held to it too, capped_downloads)."""
        where = f"{repo_id}@{revision}"
        with self._hub_errors(f"pulling {where}", repo_id), capped_downloads(
                MAX_MODEL_INFO_BYTES, f"pulling {where}", "a repo's file list", timeout_s=self.timeout_s) as budget:
            budget.file = "model info"
            hub_info = self._api(token).model_info(repo_id, revision=revision, files_metadata=True)
        sizes = {s.rfilename: s.size for s in hub_info.siblings or []}
        _check_is_vera_repo(where, set(sizes))
        size = sum(sizes.get(n) or 0 for n in (CONFIG_NAME, WEIGHTS_NAME))
        if size > self.max_bytes:
            raise ContentTooLarge(f"{where}'s adapter is {size:,} bytes, over this registry's limit of "
                                  f"{self.max_bytes:,} (VERA_MAX_UPLOAD_BYTES); nothing was downloaded.")
        return _commit_id(where, hub_info.sha), sizes

    def _pulled(self, s: Session, ref: Ref, repo_id: str, *, commit: str, content: str | None = None,
                revision: str = "", actor: str = "") -> HubSyncResult | None:
        """The earlier pull into ``ref`` of this commit (or, with ``content``, of the same files), if any; a match
        by content alone is recorded as a pull of the new commit into the same version."""
        query = (select(m.HubSync).join(m.AdapterVersion).join(m.Adapter)
                 .where(m.Adapter.owner == ref.owner, m.Adapter.name == ref.name, m.HubSync.direction == "pull",
                        m.HubSync.endpoint == self.endpoint, m.HubSync.repo_id == repo_id)
                 .order_by(m.HubSync.id.desc()).limit(1))
        row = s.scalar(query.where(m.HubSync.commit_sha == commit))
        if row is None and content is not None:
            same = s.scalar(query.where(m.HubSync.content_sha256 == content))
            if same is not None:
                row = m.HubSync(version_id=same.version_id, direction="pull", endpoint=self.endpoint,
                                repo_id=repo_id, revision=revision, commit_sha=commit,
                                with_projection=same.with_projection, format="vera", content_sha256=content,
                                actor=actor)
                s.add(row)
                s.flush()
        if row is None:
            return None
        version = s.get_one(m.AdapterVersion, row.version_id)
        info = version_info(s, version)
        return self._pull_result(row, info, changed=False)

    def _pull_result(self, row: m.HubSync, info: VersionInfo, *, changed: bool,
                     notes: list[str] | None = None) -> HubSyncResult:
        """What a pull did; ``peft_loadable``: whether PEFT loads the pulled repo (A and B in it, or PEFT's own
        generator), as a push says of the repo it writes (a seed-only copy of the portable generator answered true:
        an audit, session 53)."""
        return HubSyncResult(sync=self._sync_info(row, info.ref), changed=changed, version=info, notes=notes or [],
                             peft_loadable=row.with_projection or info.generator == PEFT_GENERATOR)

    # ---- state ---------------------------------------------------------------------------------------------
    def status(self, ref: str | Ref) -> list[HubSyncInfo]:
        """Every push and pull of a version, newest first."""
        info = self.registry.get(ref)
        with self.registry.db.session() as s:
            version = self._version_row(s, info)
            rows = s.scalars(select(m.HubSync).where(m.HubSync.version_id == version.id)
                             .order_by(m.HubSync.id.desc()))
            return [self._sync_info(row, info.ref) for row in rows]

    @staticmethod
    def _version_row(s: Session, info: VersionInfo) -> m.AdapterVersion:
        row = s.scalar(select(m.AdapterVersion).join(m.Adapter).where(
            m.Adapter.owner == info.owner, m.Adapter.name == info.name, m.AdapterVersion.version == info.version))
        if row is None:  # deleted between the read and now
            raise InvalidInput(f"{info.ref} was deleted while syncing; nothing was recorded.")
        return row

    def _sync_info(self, row: m.HubSync, ref: str) -> HubSyncInfo:
        return HubSyncInfo(ref=ref, direction=row.direction, endpoint=row.endpoint, repo_id=row.repo_id,
                           revision=row.revision, commit_sha=row.commit_sha,
                           commit_url=f"{row.endpoint}/{row.repo_id}/commit/{row.commit_sha}",
                           with_projection=row.with_projection, format=row.format,
                           content_sha256=row.content_sha256, actor=row.actor, at=row.at)

    @contextmanager
    def _hub_errors(self, action: str, repo_id: str, *, pushing: bool = False) -> Iterator[None]:
        """Hub failures as HubError with what happened and what to do; nothing is recorded after one."""
        after = (" The Hub may or may not have applied the commit; push again: an unchanged push makes no new "
                 "commit.") if pushing else ""
        try:
            yield
        except RegistryError:  # said already (a download over the limit)
            raise
        except hub_errors.OfflineModeIsEnabled as exc:
            raise HubError(f"{action}: HF_HUB_OFFLINE is set in the registry's environment; unset it to sync.") from exc
        except hub_errors.RevisionNotFoundError as exc:
            raise HubError(f"{action}: the Hub has no such revision in {repo_id} (404). Check --revision.") from exc
        except hub_errors.RepositoryNotFoundError as exc:
            raise HubError(f"{action}: {self.endpoint} has no repo {repo_id}, or it is private or gated and the "
                           "token cannot see it (404/401). Check the repo id and the Hub token.") from exc
        except hub_errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            # a refusal (4xx) applied nothing: only a failure of the Hub's own may have come half way (it said so of
            # a 401 too: a docs audit, session 53)
            raise HubError(f"{action}: {_http_problem(exc)}{after if status >= 500 or not status else ''}") from exc
        except httpx2.TimeoutException as exc:
            raise HubError(f"{action}: the Hub at {self.endpoint} did not answer within {self.timeout_s:g} s "
                           f"(VERA_HUB_TIMEOUT_S); nothing was recorded.{after}") from exc
        except httpx2.TransportError as exc:
            raise HubError(f"{action}: cannot reach the Hub at {self.endpoint} ({type(exc).__name__}); nothing was "
                           f"recorded. {CHECK_ENDPOINT}") from exc
        except OSError as exc:  # huggingface_hub's check of a download against the size the Hub declared, or this disk
            raise _download_failed(action, exc) from exc
        except (ValueError, KeyError, TypeError) as exc:  # an answer huggingface_hub could not use
            raise HubError(f"{action}: unexpected answer from the Hub at {self.endpoint} ({type(exc).__name__}: "
                           f"{exc}); nothing was recorded.{after}") from exc


def _http_problem(exc: hub_errors.HfHubHTTPError) -> str:
    status = exc.response.status_code if exc.response is not None else 0
    server = printable((exc.server_message or "").strip()[:500])
    said = f" The Hub said: {server}{'' if server.endswith(('.', '!', '?')) else '.'}" if server else ""
    if status == 401:
        return ("the Hub refused the token (401 Unauthorized). Give a token with write access: VERA_HUB_TOKEN on the "
                f"server or --hub-token.{said}")
    if status == 403:
        return f"the token may not do this (403 Forbidden); it needs write access to the repo.{said}"
    if status == 409:
        return f"the Hub reports a conflict (409): the repo or branch changed meanwhile; try again.{said}"
    if status == 429:
        wait = exc.response.headers.get("Retry-After") if exc.response is not None else None
        return f"the Hub is rate-limiting this token (429); retry after {wait or 'a while'} s.{said}"
    return f"the Hub answered {status}.{said}"


def _check_repo(repo_id: str, revision: str) -> None:
    """A Hub repo id as namespace/name, in the Hub's own terms (its words for the parts; its hints about Python
    arguments left out: this is an API, not huggingface_hub), and a revision of one line of plain text (echoed in
    errors and stored with the sync: a newline in one was taken, an outsider's finding, session 33)."""
    expected = "expected namespace/name, e.g. my-org/my-adapter"
    try:
        validate_repo_id(repo_id)
    except hub_errors.HFValidationError as exc:
        said = str(exc).split(" Use `repo_type`")[0].split(" Use 'repo_type'")[0].strip()
        raise InvalidInput(f"{repo_id[:200]!r} is not a Hub repo id ({said[:300]}); {expected}.") from None
    if "/" not in repo_id:
        raise InvalidInput(f"{repo_id!r} is not a Hub repo id; {expected}.")
    check_text(revision, "revision", max_length=200)


def _download_failed(action: str, exc: OSError) -> HubError:
    """A download that failed in huggingface_hub's own check of its size against the Hub's declared one, or on this
    server's disk, in the registry's words (never this server's paths)."""
    if isinstance(exc, hub_errors.LocalEntryNotFoundError | hub_errors.FileMetadataError):  # a file's HEAD failed
        return HubError(f"{action}: the Hub did not give a file's metadata ({type(exc).__name__}); nothing was "
                        f"recorded. {CHECK_ENDPOINT}")
    said = str(exc)
    if said.startswith("Consistency check failed"):
        declared = re.search(r"should be of size (\d+)", said)
        name = re.search(r"/([^/()]+)\)", said)  # "(…)abc/adapter_model.safetensors)"
        return HubError(f"{action}: the Hub sent {name.group(1)[:100] if name else 'a file'} with another size than "
                        f"it declared ({int(declared.group(1)) if declared else 0:,} bytes); nothing was recorded. "
                        f"{CHECK_ENDPOINT}")
    return HubError(f"{action}: this server could not keep the download ({exc.strerror or type(exc).__name__}); "
                    "nothing was recorded.")


def _card_wanted(where: str, sizes: dict[str, int | None]) -> tuple[bool, list[str]]:
    """Whether a pulled repo's README.md is fetched (it has one within MAX_PULLED_CARD_BYTES), and a note if it has
    one that is not."""
    if CARD_NAME not in sizes:
        return False, []
    size = sizes[CARD_NAME]
    if size is not None and size <= MAX_PULLED_CARD_BYTES:
        return True, []
    return False, [f"{where}'s {CARD_NAME} ({'size unknown' if size is None else f'{size:,} bytes'}) is over the "
                   f"{MAX_PULLED_CARD_BYTES:,} bytes read of a card: it was not downloaded, and metrics it may list "
                   "were not recorded."]


@contextmanager
def _named_as(folder: Path, where: str) -> Iterator[None]:
    """A refusal of the files in ``folder`` names them as the Hub repo's (``where``), not by this server's scratch
    folder (security.md: no server path in an answer)."""
    try:
        yield
    except RegistryError as exc:
        def named(text: str) -> str:
            return text.replace(f"{folder}{os.sep}", f"{where}'s ").replace(str(folder), where)

        exc.args = tuple(named(a) if isinstance(a, str) else a for a in exc.args)
        if exc.problems is not None:
            exc.problems = [named(p) for p in exc.problems]
        raise


def _commit_id(where: str, sha: object) -> str:
    """The commit id the Hub answered, which is stored and printed: 40 hexadecimal digits, as every Hub commit's,
    else HubError (a Hub that answered 200 characters was a 500 on PostgreSQL; escape sequences reached `vera hub
    status`: an outsider's finding, session 39)."""
    if not isinstance(sha, str) or not _COMMIT.fullmatch(sha):
        shown = (ascii(sha[:60]) + ("..." if len(sha) > 60 else "")) if isinstance(sha, str) else "none"
        raise HubError(f"{where}: the Hub answered commit id {shown}, not one of 40 hexadecimal digits as every Hub "
                       f"commit has; nothing was recorded. {CHECK_ENDPOINT}")
    return sha


def _check_is_vera_repo(where: str, names: set[str]) -> None:
    if CONFIG_NAME not in names:
        raise InvalidInput(f"{where} has no {CONFIG_NAME}: it is not a PEFT adapter repo (files: "
                           f"{', '.join(sorted(names)[:8]) or 'none'}).")
    if WEIGHTS_NAME not in names:
        pickled = " It has adapter_model.bin, a pickle, which the registry never loads." \
            if "adapter_model.bin" in names else ""
        raise InvalidInput(f"{where} has no {WEIGHTS_NAME}.{pickled} Ask for a safetensors copy "
                           "(PEFT's default since 0.6).")


def _vera_config(where: str, path: Path) -> dict[str, Any]:
    config = json_object(path.read_bytes(), f"{where}'s {CONFIG_NAME}")
    kind = config.get("peft_type")
    if kind not in VERA_PEFT_TYPES:
        raise InvalidInput(f"{where} holds a PEFT {kind or 'unknown-type'} adapter, not VeRA (peft_type "
                           f"{kind!r}); only VeRA adapters can be pulled.")
    return config


def _card_record(path: Path) -> dict[str, Any]:
    """The ``vera_registry`` block of a pulled model card, if it has one (safe YAML; anything odd is ignored)."""
    if not path.is_file():
        return {}
    try:
        meta = metadata_load(path)
    except Exception:  # noqa: BLE001 - a malformed card is not a reason to refuse the adapter
        return {}
    record = meta.get("vera_registry") if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else {}


def _card_metrics(metrics: object) -> dict[str, Any]:
    """Metrics from a card: each entry a publish takes as it is (check_json, check_plain: numbers, text, lists and
    objects of them, as a fine-tune's final_eval, eval and train_loss curve are), the others left out, as odd
    parameters are, and no more than MAX_METRICS_BYTES of them (nested ones were all left out: an audit, session 53)."""
    if not isinstance(metrics, dict):
        return {}
    kept: dict[str, Any] = {}
    size = 2  # the JSON object's braces
    for key, value in metrics.items():
        if not isinstance(key, str):
            continue
        try:
            entry = len(check_json({key: value}, "a card's metric", max_bytes=MAX_METRICS_BYTES).encode()) - 2
            check_plain({key: value}, "a card's metric")
        except InvalidInput:
            continue
        if size + entry + 2 <= MAX_METRICS_BYTES:  # (", " between entries)
            size += entry + 2
            kept[key] = value
    return kept


def _card_params(params: object) -> dict[str, str]:
    """Training parameters from a card (the ``params`` a push wrote): each key and value the registry takes as they
    are (check_params), the others left out, as odd metrics are."""
    if not isinstance(params, dict):
        return {}
    kept: dict[str, str] = {}
    for key, value in list(params.items())[:MAX_PARAMS]:
        if not isinstance(key, str):  # YAML's 7, null, true as keys (a 500 once: an outsider's walk)
            continue
        try:
            kept.update(check_params({key: value}))
        except InvalidInput:
            continue
    return kept


def _metric_cell(value: Any) -> str:
    """A metric's value in the card's table: a number or a text as it is (the cards of flat metrics keep their
    bytes); a list (a loss curve) as metric_text says it, not Python's repr of up to 500 points."""
    return metric_text(value, whole="all of them under vera_registry above") if isinstance(value, list) else str(value)


def _cell(text: str) -> str:
    """A parameter's value in a Markdown table cell: its '|' escaped (a target regex: query|value)."""
    return text.replace("|", "\\|")


def _local_path(name: str) -> bool:
    """Whether a base model's name is plainly a local folder (absolute, home-relative or ./, ../), which PEFT writes
    into adapter_config.json when the base was loaded from disk. "org/model" may be a Hub id: not judged."""
    return name.startswith(("/", "~", "./", "../", "\\")) or (len(name) > 2 and name[1] == ":" and name[2] in "/\\")
