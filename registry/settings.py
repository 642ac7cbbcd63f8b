"""Service settings: one scheme for every command, by flag or environment variable (VERA_*)."""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.domain.errors import InvalidInput
from registry.domain.publishers import MIN_TOKEN_PURGE_DAYS, TrustedPublisher, check_publishers
from registry.domain.schemas import (
    DERIVED_MAX_BYTES,
    MAX_COMPARE_WORK,
    MAX_DATASET_BYTES,
    MAX_EXPORT_BYTES,
    MAX_EXPORT_WORK,
    MAX_JOB_CHECKPOINT_BYTES,
    MAX_JOB_TIME_LIMIT_S,
    MAX_PENDING_JOBS,
    MAX_PROJECTION_ELEMENTS,
    MAX_UPLOAD_BYTES,
    ORGS_PER_USER,
    SCRATCH_BYTES,
    PoolSettings,
    QuotaSize,
)
from registry.logs import masked_url
from registry.services.file_cache import DEFAULT_FILE_CACHE_BYTES


def default_data_dir() -> Path:
    return Path.home() / ".vera"


class Settings(BaseSettings):
    """VERA_DATABASE_URL, VERA_STORAGE_URL, VERA_DATA_DIR; the embedded default needs no server."""

    model_config = SettingsConfigDict(env_prefix="VERA_", extra="ignore")

    # Where the embedded default keeps its SQLite file and blob folder.
    data_dir: Path = default_data_dir()
    # SQLAlchemy URL; default: a SQLite file in data_dir. PostgreSQL: postgresql+psycopg://user@host/db
    database_url: str | None = None
    # PostgreSQL connections per process (registry.store.database.PoolSettings): the pool's size and overflow, how
    # long to wait for a free connection, and to open one. Replicas x processes x (size + overflow) must stay under
    # the server's max_connections.
    database_pool_size: int = Field(default=5, ge=1, le=500)
    database_max_overflow: int = Field(default=10, ge=0, le=500)
    database_pool_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    database_connect_timeout_s: int = Field(default=10, ge=1, le=600)
    # fsspec URL or local path for blobs; default: data_dir/blobs. At scale: s3://bucket/prefix and the like.
    storage_url: str | None = None
    # Tokens: None decides by the bind address (not required on loopback: single-user local mode).
    require_tokens: bool | None = None
    # Let requests without a token read (list, fetch, verify) when tokens are required.
    anonymous_read: bool = False
    # The visibility of adapters published without saying: public (whoever may read the registry) or private (the
    # owner, its organisation's members and admins). Existing adapters keep theirs.
    default_visibility: Literal["public", "private"] = "public"
    # Storage quotas per owner namespace (registry.services.quotas): the stored bytes of its versions. The quota of
    # every owner (unset: none), and per-owner quotas over it, a JSON object ('{"acme": "50GB", "ci": null}'; null:
    # none for that owner); bytes, or sizes with a unit (50GB, 50GiB). A quota an admin sets through the API
    # (`vera quota`) overrides both. A publish over its owner's quota is refused (403 quota_exceeded).
    owner_quota_bytes: QuotaSize | None = None
    owner_quotas: dict[str, QuotaSize | None] = {}
    # Invitations to organisations (registry.services.invitations): on, an organisation's admin who adds a user who is
    # not a member invites them, and they become a member only by accepting (`vera org accept ORG`) within
    # org_invitation_days; off (the default), a user added is a member at once. Pending invitations are kept when it
    # is turned off, and can still be answered or cancelled.
    org_invitations: bool = False
    org_invitation_days: float = Field(default=14.0, gt=0, le=365)
    # How many organisations one user may have created that still exist, and how many times in 24 hours it may create
    # or rename one (registry.services.access): each organisation has its own storage quota and job queue, and a
    # renamed organisation's old name is retired. Registry administrators are not limited; 0: only they create and
    # rename organisations.
    orgs_per_user: int = Field(default=ORGS_PER_USER, ge=0, le=1_000_000)
    # Housekeeping (registry.services.housekeeping): every API process deletes, about hourly, the access tokens that
    # ended (revoked or expired) more than this many days ago, as `vera token purge --days N` does (their audit events
    # stay); 0: only by hand. At least 1: a CI identity token is refused a second exchange while its token is kept.
    token_purge_days: float = Field(default=30.0, ge=0, le=3650)
    # Whether adapters' own retention rules are applied (`vera retention`): by the API's housekeeping, about hourly,
    # and by `vera gc`. False: no rule deletes anything (the rules stay, and apply again once it is true): for a
    # database restored from a backup to recover versions a rule deleted, until their rules are changed.
    retention_rules: bool = True
    # The longest a new access token may live, in days (`vera auth create-token`, POST /api/v1/tokens, `vera token
    # create`): one asked for without an expiry gets this one, a longer one is refused; tokens made before keep
    # theirs. None: tokens may never expire (their maker chooses).
    max_token_days: float | None = Field(default=None, gt=0, le=3650)
    max_upload_bytes: int = Field(default=MAX_UPLOAD_BYTES, ge=1)
    # The largest dataset a job submission uploads (read whole and parsed by the API, stored until the job ends).
    max_dataset_bytes: int = Field(default=MAX_DATASET_BYTES, ge=1)
    # The largest projection (r * (max_in + max_out) numbers) the registry generates: publishes, downloads with
    # projections, LoRA exports, verify and compare of anything larger are refused before allocating.
    max_projection_elements: int = Field(default=MAX_PROJECTION_ELEMENTS, ge=1)
    # How many projections may be generated at once; more requests wait up to 30 s, then get 503 busy.
    concurrent_generations: int = Field(default=2, ge=1, le=256)
    # The largest LoRA export built (bytes of factors), checked before any is computed; 16 GiB by default.
    max_export_bytes: int = Field(default=MAX_EXPORT_BYTES, ge=1 << 20)
    # The most multiply-adds of weight-delta arithmetic one comparison (POST /api/v1/compare) may cost, estimated
    # from the versions' shapes and checked before any delta is formed; 2^37 (about 5 s of 2 cores) by default.
    max_compare_work: int = Field(default=MAX_COMPARE_WORK, ge=1)
    # The most work one LoRA export may cost (vera_core.lora.lora_export_work: float32 multiply-adds' worth, each
    # number written and a rank-capped export's QR and SVD counted), estimated from the layers' shapes before anything
    # is computed; 2^39 (7-17 s here).
    max_export_work: int = Field(default=MAX_EXPORT_WORK, ge=1)
    # A read-only registry (read_only) builds the download forms the registry never stored into a temporary folder of
    # each process (TMPDIR), keeping at most this much there (least recently used forms out first; bytes, or a size
    # with a unit: 10GB, 10GiB); the form just built is always kept, whatever its size.
    read_only_scratch_bytes: QuotaSize = SCRATCH_BYTES
    # The download forms a registry builds (LoRA exports, folders with A and B materialised) are stored and served
    # from storage; all versions together keep at most this much (bytes, or 32GiB), the least recently built
    # forgotten first (built again when asked for), the one just built always kept. Any reader of a public version
    # may have them built, and they count against no owner's quota: this bounds what readers can make it store.
    derived_max_bytes: QuotaSize = DERIVED_MAX_BYTES
    # Downloads build a version's files once per option and keep them in memory, up to this many bytes per process
    # (least recently used out first); 0 builds them on every request.
    file_cache_bytes: int = Field(default=DEFAULT_FILE_CACHE_BYTES, ge=0)
    # On object storage that signs URLs (S3 and compatible ones), answer hash-addressed downloads
    # (.../versions/N/blobs/<sha256>) with a 307 to a presigned URL valid this many seconds, so that the object store
    # carries the bytes instead of the API; 0 (the default) streams them through the API. Clients must reach the
    # storage's endpoint (AWS_ENDPOINT_URL) themselves.
    presigned_downloads_s: int = Field(default=0, ge=0, le=7 * 24 * 3600)
    # Threads of each API process that serve downloads and file lists (the hot reads); the other requests have their
    # own pool. Few is fastest on local storage (40 threads contending for one process's interpreter serve a quarter
    # fewer reads); raise it on object storage with slow round trips, where each thread waits on the network.
    read_threads: int = Field(default=8, ge=1, le=256)
    # When set, GET /metrics answers only requests that bring it ('Authorization: Bearer <it>'; Prometheus: the scrape
    # job's authorization.credentials); unset, whoever reaches the port may scrape (registry-wide totals).
    metrics_token: SecretStr | None = None
    # The proxies (load balancers) whose X-Forwarded-For / X-Forwarded-Proto the API believes, comma-separated
    # addresses or networks ("*": any, only where nothing else can reach the API): the caller's address in the log
    # and in the anonymous rate-limit budget is then the client's, not the balancer's.
    forwarded_allow_ips: str = "127.0.0.1"
    # Costly requests (verify, compare, file downloads) one caller may make a minute, per API process; then 429.
    costly_requests_per_minute: int = Field(default=120, ge=1)
    # A running job whose worker sent no heartbeat for this long can be claimed by another worker.
    job_lease_s: float = Field(default=60.0, gt=0)
    # A job whose worker died is queued again after this long (doubling with each attempt), at most this many
    # attempts in all; then it fails, saying why.
    job_retry_backoff_s: float = Field(default=30.0, ge=0)
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    # The largest checkpoint (bytes, all its files) a worker stores in the registry so that an attempt of the job on
    # another machine resumes from it; a larger one stays on its machine (docs/jobs.md).
    job_checkpoint_max_bytes: int = Field(default=MAX_JOB_CHECKPOINT_BYTES, ge=1, le=2**40)
    # What fine-tune jobs may train: the demo alias and Hub ids the workers have in their local Hub cache, never a
    # path (a JSON list in VERA_JOB_BASE_MODELS, e.g. '["minilm", "meta-llama/Llama-3.2-1B"]').
    job_base_models: list[str] = ["minilm"]
    # How long a job may train (seconds). A job submitted without --time-limit gets the default (unset: no limit);
    # a job asking for more than the maximum is refused at submission, naming it. The worker applies the default to
    # a job queued without one before it was set (docs/jobs.md, "Time limit").
    job_default_time_limit_s: float | None = Field(default=None, gt=0, le=MAX_JOB_TIME_LIMIT_S)
    job_max_time_limit_s: float = Field(default=MAX_JOB_TIME_LIMIT_S, gt=0, le=MAX_JOB_TIME_LIMIT_S)
    # The most jobs one owner (a user or an organisation) may have queued or running at once; one more is refused
    # (403 quota_exceeded), so that one token cannot fill the queue every owner's jobs wait in.
    job_max_pending_per_owner: int = Field(default=MAX_PENDING_JOBS, ge=1, le=1_000_000)
    # The HuggingFace Hub: where `vera hub push|pull` goes, the token the server uses when a request brings none
    # (held as a secret: never printed, logged or stored), and how long one Hub request may take.
    hub_endpoint: str = "https://huggingface.co"
    hub_token: SecretStr | None = None
    hub_timeout_s: float = Field(default=60.0, gt=0)
    # Read a base model's config.json from the Hub (anonymously, public repos only) when a seed-only adapter that
    # PEFT wrote is published for a base whose layer shapes nobody declared; once read, the shapes are declared.
    hub_base_configs: bool = True
    # Logs of the servers and workers (registry.logs): debug, info, warning or error; json, text, or auto (JSON unless
    # stderr is a terminal).
    log_level: str = "info"
    log_format: str = "auto"
    # Webhooks (docs/webhooks.md). Each API process runs a dispatcher (unless webhook_dispatch is false) that looks
    # for new events every webhook_poll_s seconds; a receiver gets webhook_timeout_s per step to answer; a failed
    # delivery is tried again after webhook_retry_backoff_s, doubling, webhook_max_attempts times in all.
    webhook_dispatch: bool = True
    webhook_poll_s: float = Field(default=1.0, gt=0, le=3600)
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=300)
    webhook_retry_backoff_s: float = Field(default=10.0, gt=0, le=86400)
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    # Let webhook URLs reach loopback, private and link-local addresses (a receiver on the registry's own network);
    # refused by default, so that webhooks cannot probe the inside. Cloud metadata addresses are refused regardless.
    webhook_allow_private: bool = False
    # Download counts (registry.services.downloads): each API process counts in memory and adds its counts to the
    # database every this many seconds, sooner once this many downloads wait, and when it stops.
    download_flush_s: float = Field(default=10.0, gt=0, le=3600)
    download_flush_count: int = Field(default=1000, ge=1, le=1_000_000)
    # Read-only mode (docs/deployment.md, "Read replicas and maintenance windows"), for a replica on a PostgreSQL hot
    # standby, a backup or migration window, or a public mirror: the API refuses every change (503 read_only) before
    # doing any work, and its reads write nothing to the database or the blob storage (download counts and tokens'
    # last use are not recorded, verify does not record its report, a download form nobody built yet is built into a
    # temporary folder of the process); `vera worker` refuses to start, `vera up` and `vera cluster` start none.
    read_only: bool = False
    # Where changes go instead, named in a read-only registry's refusals: the primary registry's URL.
    primary_url: str | None = Field(default=None, max_length=300)
    # Trusted publishing (registry.services.trusted, docs/security.md): the OpenID Connect issuers whose identity
    # tokens (a CI job's: GitHub Actions, GitLab CI) POST /api/v1/tokens/oidc trades for a short-lived registry
    # token, a JSON list of {name, issuer, audience, claims, user, owners, scopes, minutes}; none by default.
    trusted_publishers: list[TrustedPublisher] = []

    @field_validator("metrics_token")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("VERA_METRICS_TOKEN is shorter than 16 characters: use a random secret, e.g. the output "
                             "of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return value

    @field_validator("token_purge_days")
    @classmethod
    def _purge_after_a_day(cls, value: float) -> float:
        if 0 < value < MIN_TOKEN_PURGE_DAYS:
            raise ValueError(f"tokens are purged at least {MIN_TOKEN_PURGE_DAYS:g} day after they end (a CI job's "
                             "identity token must not be exchanged twice); set 1 or more, or 0 to purge by hand only")
        return value

    @field_validator("max_token_days")
    @classmethod
    def _at_least_an_hour(cls, value: float | None) -> float | None:
        if value is not None and value < 1 / 24:
            raise ValueError("tokens may not be limited to less than an hour (1/24 day, about 0.042): a token trusted "
                             "publishing mints lives up to 60 minutes, and a sign-in shorter than that is of no use")
        return value

    @field_validator("trusted_publishers")
    @classmethod
    def _publishers(cls, value: list[TrustedPublisher]) -> list[TrustedPublisher]:
        return check_publishers(value)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"VERA_DATABASE_URL={masked_url(value)!r} is not supported; use sqlite:///path/registry.db or "
                "postgresql+psycopg://user@host:5432/db"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"VERA_LOG_LEVEL={value!r}: use debug, info, warning or error")
        return value.lower()

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("auto", "json", "text"):
            raise ValueError(f"VERA_LOG_FORMAT={value!r}: use auto, json or text")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: str) -> str:
        items = [x.strip() for x in value.split(",")]
        if items != ["*"]:
            for item in items:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(
                        f"VERA_FORWARDED_ALLOW_IPS={value!r}: {item!r} is not an address or a network; give the "
                        "proxies' addresses or networks, comma-separated (e.g. '10.0.0.5,10.1.0.0/16'), or '*' "
                        "alone") from None
        return ",".join(items)

    @field_validator("hub_endpoint")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"VERA_HUB_ENDPOINT={value!r} must be an http(s) URL, e.g. https://huggingface.co")
        return value.rstrip("/")

    @field_validator("primary_url")
    @classmethod
    def _registry_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if (not value.startswith(("https://", "http://")) or not value.split("://", 1)[1].strip("/")
                or any(not " " < c <= "~" for c in value)):  # printable ASCII: it goes into answers and headers
            raise ValueError(f"VERA_PRIMARY_URL={value!r} must be the http(s) URL of the registry that takes changes, "
                             "e.g. https://vera.example.org")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_within_max(self) -> Settings:
        default, most = self.job_default_time_limit_s, self.job_max_time_limit_s
        if default is not None and default > most:
            raise ValueError(f"VERA_JOB_DEFAULT_TIME_LIMIT_S={default:g} is above VERA_JOB_MAX_TIME_LIMIT_S={most:g}: "
                             "a job given the default would be refused; lower the default or raise the maximum")
        return self

    def environment(self) -> dict[str, str]:
        """These settings as the VERA_* variables that give them back (for the processes `vera serve --workers`
        starts); unset ones are left out."""
        variables = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list | dict):
                value = json.dumps(to_jsonable_python(value))
            variables[f"VERA_{name.upper()}"] = str(value)
        return variables

    @property
    def database_pool(self) -> PoolSettings:
        return PoolSettings(size=self.database_pool_size, max_overflow=self.database_max_overflow,
                            timeout_s=self.database_pool_timeout_s, connect_timeout_s=self.database_connect_timeout_s)

    @property
    def shared_backend(self) -> str:
        """What makes this a registry others share ("a PostgreSQL database", "object storage"), or "": the API then
        requires tokens even on loopback (registry.cli.run)."""
        if self.database_url is not None and not self.database_url.startswith("sqlite"):
            return "a PostgreSQL database"
        if self.storage_url is not None and "://" in self.storage_url and not self.storage_url.startswith("file://"):
            return "object storage"
        return ""

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.embedded_database}"

    @property
    def embedded_database(self) -> Path:
        """The embedded default's SQLite file (used when no VERA_DATABASE_URL is set)."""
        return self.data_dir / "registry.db"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or str(self.data_dir / "blobs")


#: VERA_* variables that are not Settings fields but are read elsewhere (the client, the dashboard, the setup and
#: test scripts, typer's completion): not reported as unknown.
OTHER_VARIABLES = frozenset({
    "VERA_REGISTRY_URL", "VERA_TOKEN", "VERA_TO_TOKEN", "VERA_ID_TOKEN", "VERA_TORCH_INDEX", "VERA_CACHE_DIR",
    "VERA_NO_CACHE", "VERA_CONFIG_DIR", "VERA_UI_REGISTRIES", "VERA_OFFLINE", "VERA_EXTRAS",
    "VERA_UI_REMEMBER_DAYS",
    "VERA_UPDATE_SNAPSHOTS", "VERA_SETUP_STRICT", "VERA_SKIP_BROWSER", "VERA_SKIP_POSTGRES", "VERA_FUZZ_EXAMPLES",
    "VERA_FUZZ_RANDOM", "VERA_GPU_CHECK_BUDGET_S", "VERA_GPU_CHECK_MINILM", "VERA_GPU_CHECK_VENV", "_VERA_COMPLETE",
})


def ui_remember_days(environ: Mapping[str, str]) -> float:
    """VERA_UI_REMEMBER_DAYS: how long the dashboard's remembered sign-in lasts (web_ui.remember; default 7, more
    than 0 and at most 365 days)."""
    raw = environ.get("VERA_UI_REMEMBER_DAYS", "7")
    try:
        days = float(raw)
    except ValueError:
        raise InvalidInput(f"VERA_UI_REMEMBER_DAYS must be a number of days (e.g. 7); got {raw!r}.") from None
    if not (math.isfinite(days) and 0 < days <= 365):
        raise InvalidInput(f"VERA_UI_REMEMBER_DAYS must be more than 0 and at most 365 days; got {raw!r}.")
    return days


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Each VERA_* variable in ``environ`` that no part of vera reads, with the setting it was probably meant to
    be: a misspelt VERA_DATABASE_URL is ignored, and the command then runs on the embedded default database."""
    known = {f"VERA_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    found = []
    for variable in sorted(v for v in environ if v.startswith("VERA_") and v not in known):
        close = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.8)
        found.append(f"{variable} (did you mean {close[0]}?)" if close else variable)
    return found


def settings_problem(error: ValidationError) -> str:
    """A refused setting as its operator knows it: the VERA_* variable and its value (not a secret's), what was
    expected, and what to do, instead of pydantic's field name and its link."""
    lines = []
    for detail in error.errors():
        field = str(detail["loc"][0]) if detail["loc"] else "?"
        variable, given = f"VERA_{field.upper()}", detail.get("input")
        secret = "token" in field or "secret" in field or "password" in field
        value = f"={given!r}" if isinstance(given, str | int | float) and not secret else ""
        reason = str(detail["msg"]).removeprefix("Value error, ")
        if len(detail["loc"]) > 1 and isinstance(detail["loc"][1], str):  # an entry of a JSON object: its key
            value, reason = "", f"the entry {detail['loc'][1]!r} ({given!r}): {reason}"
        # a check of several settings together (no field) names its variables itself
        lines.append(reason if reason.startswith(variable) or not detail["loc"] else f"{variable}{value}: {reason}")
    return "; ".join(lines) + (". Fix it (the environment variable, or the option that sets it), or unset it for the "
                               "default.")
