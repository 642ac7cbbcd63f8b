"""The typed HTTP client of the registry API: what the CLI and the dashboard use (and nothing else)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
import pybase64

from registry.credentials import stored_token
from registry.domain.errors import (
    HTTP_STATUS,
    MOVED_HEADER,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    RegistryError,
    Unauthorized,
    yanked_copy,
)
from registry.domain.events import DeliveryInfo, EventPage, WebhookCreated, WebhookInfo
from registry.domain.publishers import PublisherInfo
from registry.local_cache import LocalCache, cache_root, default_cache_dir, new_file, ref_key
from registry.logs import HEADER, REQUEST_ID
from registry.plain_http import IDEMPOTENT, PlainHttpTransport
from vera_core.folders import write_adapter_files
from vera_core.keys import PICKLE_HINT, PICKLE_NAME, WEIGHTS_NAME

if TYPE_CHECKING:  # torch is imported only by the methods that need it: the dashboard never loads it
    import torch

    from vera_core.model import VeraModel
from registry.domain.schemas import (
    ADAPTER_FILES,
    JOB_EVENT_PAGE,
    MAX_LOOKUP,
    AdapterInfo,
    BaseModelInfo,
    Comparison,
    EvaluationInfo,
    FileEntry,
    FileManifest,
    HubSyncInfo,
    HubSyncResult,
    InvitationInfo,
    JobEventInfo,
    JobInfo,
    LineageGraph,
    LookedUp,
    Lookup,
    MovedAdapter,
    OrganizationInfo,
    OwnerUsage,
    Page,
    Ref,
    RetentionInfo,
    RetentionPreview,
    TokenInfo,
    VerificationReport,
    VersionInfo,
    WhoAmI,
    alias_problem,
)

DEFAULT_URL = "http://127.0.0.1:8765"
log = logging.getLogger("vera.client")
T = TypeVar("T")
#: The server's problem type names the exception; the status decides when it names none we know.
_BY_CODE: dict[str, type[RegistryError]] = {cls.code: cls for cls in HTTP_STATUS}
_BY_STATUS: dict[int, type[RegistryError]] = {}
for _cls, _status in HTTP_STATUS.items():
    _BY_STATUS.setdefault(_status, _cls)
_BY_STATUS[500] = RegistryError  # an unexpected server error is not evidence of corrupt bytes


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One certificate store for every client of this process: loading it costs ~20 ms of CPU, which each new
    httpx.Client (and each `httpx.get`, which makes one) would otherwise pay."""
    return ssl.create_default_context()


class _TlsWhenAsked(httpx.BaseTransport):
    """The https:// transport, built on the first https:// request, with the shared certificate store: a `vera`
    command that talks to an http:// registry does not load the store at all (~25 ms of its start)."""

    def __init__(self) -> None:
        self.transport: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.transport is None:
            self.transport = httpx.HTTPTransport(verify=shared_ssl_context())
        return self.transport.handle_request(request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@contextlib.contextmanager
def _progress(what: str, size: int, show: bool) -> Iterator[Any]:
    """A callable advancing a progress bar by n bytes: a tqdm bar on stderr for files over 4 MiB when ``show``."""
    if not show or size < 4 * 2**20:
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=size, desc=what, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar.update


def _raise_for(response: httpx.Response, base: str = "") -> NoReturn:
    """The registry's exception for an error response (its problem type, else its status); ``base``: the registry
    URL, named when the answer shows it is not the registry's API."""
    try:
        body = response.json()
        detail, code = body.get("detail", response.text), str(body.get("type", "")).rpartition("/")[2]
        problems = body.get("problems")
    except (ValueError, AttributeError, RecursionError):  # not JSON, not UTF-8, not an object, nested too deep
        detail, code, problems = _not_a_problem(response), "", None
    if base and response.status_code in (404, 405) and (not code or detail in ("Not Found", "Method Not Allowed")):
        # every error of the registry's API names its problem type and says what is missing: a bare 404 or 405 (a
        # model server's, even in problem details: it shares the registry's error handlers; the dashboard's
        # plain-text 405 to a POST) is another server's, or a registry older than the route
        detail = _not_the_api(base, f"has no such route ({detail})")
    error = _BY_CODE.get(code, _BY_STATUS.get(response.status_code, RegistryError))(str(detail))
    if isinstance(error, NotFound) and (moved := response.headers.get(MOVED_HEADER)):
        error.moved_to = moved[:200]
    if isinstance(problems, list) and problems and all(isinstance(p, str) for p in problems):
        error.problems = [problem[:2000] for problem in problems[:100]]  # (what one refusal lists: Problems)
    raise error


#: The largest answer read whole (file lists of the largest adapters are a few MiB), and the largest error answer.
MAX_ANSWER_BYTES, MAX_ERROR_BYTES = 64 << 20, 1 << 20
#: The slowest average rate a download may keep, after its first ``timeout`` seconds: one trickled slower (a byte
#: per read timeout would hold the caller for days) is cut off, and retried like a download that broke off.
MIN_DOWNLOAD_BYTES_PER_S = 64 << 10


class _TooSlow(httpx.ReadTimeout):
    """A body that kept arriving, but too slowly to finish by its deadline (a transport error: retried as one)."""


def _deadline_passed(deadline: float, what: str, request: httpx.Request) -> None:
    if time.monotonic() > deadline:
        raise _TooSlow(f"{what} was still arriving at its deadline; the server trickles it (or the network is far "
                       "too slow).", request=request)


def _read_capped(response: httpx.Response, limit: int, base: str, seconds: float) -> httpx.Response:
    """A streamed ``response`` read whole, as a response holding its body, or RegistryError once it passes
    ``limit`` bytes (a server that is not the registry, or a broken one: nothing past the limit is read or kept),
    or _TooSlow once it has taken more than ``seconds`` (each read has the timeout; this bounds them all)."""
    pieces, size, deadline = [], 0, time.monotonic() + seconds
    for piece in response.iter_bytes():
        size += len(piece)
        if size > limit:
            raise RegistryError(f"{base} sent an answer of more than {limit:,} bytes to a request whose answer is "
                                "at most a few MiB; it is not the registry's API, or it is broken.")
        _deadline_passed(deadline, "The answer", response.request)
        pieces.append(piece)
    kept = [(k, v) for k, v in response.headers.multi_items()  # the body is whole and decoded now
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=kept, content=b"".join(pieces), request=response.request)


def _not_the_api(base: str, what: str) -> str:
    return (f"{base} {what}: it does not look like the registry's API (or it is a registry older than this client). "
            "Is it the dashboard's or a model server's address? The API listens where `vera up --port` / `vera serve "
            f"--port` says (default {DEFAULT_URL}); set --registry or VERA_REGISTRY_URL to it.")


def _not_a_problem(response: httpx.Response) -> str:
    """An error answer that is not the registry's problem document (a proxy's, another server's): its status and a
    line of its text; an HTML page is named, not quoted."""
    status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    text = " ".join(response.text.split())
    if text.startswith("<") or response.headers.get("content-type", "").startswith("text/html"):
        return f"{status} (an HTML page, not the registry's answer)"
    return f"{status}: {text[:300]}" if text else status


class _Counted:
    """A file being uploaded whose reads advance a progress bar (``advance(n)``); everything else is the file's."""

    def __init__(self, file: IO[bytes], advance: Callable[[int], object]) -> None:
        self._file, self._advance = file, advance

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._advance(len(data))
        return data

    def __getattr__(self, name: str) -> Any:  # fileno, seek, tell: httpx sizes and rewinds the upload with them
        return getattr(self._file, name)


class RegistryUnavailable(RegistryError):
    """The registry could not be reached at all."""

    code = "unavailable"


class RegistryOffline(RegistryUnavailable):
    """Offline (VERA_OFFLINE=1, or ``RegistryClient(offline=True)``): no request is sent, and what is asked for is
    not in the local cache."""

    code = "offline"


def offline_from_env() -> bool:
    """VERA_OFFLINE=1 (or true, yes): clients send no request and read what they fetched before from the cache, as
    HF_HUB_OFFLINE does for huggingface_hub."""
    return os.environ.get("VERA_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _inline_bytes(entry: FileEntry, ref: str) -> bytes:
    """A listed file's inline content, checked against its size and SHA-256."""
    assert entry.content is not None
    try:
        if len(entry.content) > 4 * (entry.size // 3 + 1):
            raise ValueError("longer than its size")
        data = pybase64.b64decode(entry.content, validate=True)
    except ValueError as exc:  # binascii.Error is one
        raise IntegrityError(f"{entry.name} of {ref} came inline as bad base64 ({exc}); fetch again.") from exc
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(f"{entry.name} of {ref} came inline with {len(data):,} bytes that do not match the "
                             f"{entry.size:,} bytes and SHA-256 {entry.sha256[:16]}... listed; fetch again.")
    return data


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds an adapter (its config and its weights)."""
    from vera_core.checkpoint import CONFIG_NAME, WEIGHTS_NAME

    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def _check_listed(entry: FileEntry) -> None:
    """Checked before anything else: what the registry lists becomes a path here."""
    if entry.name not in ADAPTER_FILES:
        raise IntegrityError(f"The registry listed {entry.name[:100]!r}, not an adapter file.")


class _LinkRefused(RegistryError):
    """The object store refused a presigned download link (expired, or the clocks disagree): ask the registry for
    a new one."""


#: ``fetch`` asks for the bytes of files up to this size with their list (the registry's limit).
INLINE_BYTES = 1 << 20
#: The most jobs ``jobs`` asks one page of GET /api/v1/jobs for (the registry's largest page).
JOB_PAGE = 500
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: The longest a Retry-After (429, 503) is waited for before the request is sent again; longer ones are reported.
MAX_RETRY_AFTER_S = 10.0


def not_a_folder(root: Path) -> str | None:
    """Why ``root`` cannot be an adapter folder to publish (it is a file, or is not there), or None."""
    if root.is_dir():
        return None
    return (f"{root} {'is a file' if root.exists() else 'does not exist'}; expected a PEFT adapter folder "
            "(adapter_config.json and adapter_model.safetensors).")


def _dataset_fields(path: Path) -> dict[str, str]:
    """The publish form's lineage of a training data file: its SHA-256 and size, read here in pieces."""
    if not path.is_file():
        raise InvalidInput(f"The dataset {path} {'is a folder' if path.is_dir() else 'does not exist'}; give the file "
                           "the adapter was trained on (its SHA-256 and size are recorded, the data is not uploaded).")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return {"dataset_sha256": digest.hexdigest(), "dataset_bytes": str(path.stat().st_size)}


class RegistryClient:
    """``RegistryClient(url, token)``; defaults from VERA_REGISTRY_URL and VERA_TOKEN.

    ``cache``: where fetched files are kept (registry.local_cache): None for VERA_CACHE_DIR (default
    ~/.cache/vera-registry; VERA_NO_CACHE=1 turns it off), a folder, or False for none. ``retries``: how many times
    an idempotent request is sent again after a connection error or a 502/503/504, with exponential backoff from
    ``backoff_s``, and after a 429 (too many costly requests) once its Retry-After (up to 10 s) has passed.
    ``inline``: ``fetch`` gets files of at most this many bytes (up to 1 MiB) inside the file list's answer, so a
    small adapter is one request; 0 downloads every file on its own by hash. ``offline`` (default: VERA_OFFLINE):
    send no request at all; ``fetch`` and ``load_adapter`` answer from the cache what this machine fetched before
    (a reference by alias or ``latest`` as it was pinned then), anything else raises RegistryOffline."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None, cache: str | os.PathLike[str] | bool | None = None,
                 retries: int = 3, backoff_s: float = 0.25, inline: int = INLINE_BYTES,
                 offline: bool | None = None) -> None:
        self.url = (url or os.environ.get("VERA_REGISTRY_URL") or DEFAULT_URL).rstrip("/")
        if not self.url.lower().startswith(("http://", "https://")):
            raise InvalidInput(f"The registry URL {self.url!r} does not start with http:// or https://; did you mean "
                               f"http://{self.url.partition('://')[2] or self.url}? (--registry or VERA_REGISTRY_URL)")
        token = os.environ.get("VERA_TOKEN") if token is None else token  # "" means: no token, not even VERA_TOKEN
        if token is None:
            token = stored_token(self.url)  # `vera login`
            #: a refusal of the token `vera login` stored says so (a team admin's walk: a revoked stored token
            #: answered "pass a valid one with VERA_TOKEN or --token", which the user had not passed)
            self._stored = token is not None
        else:
            self._stored = False
        # identity: the registry never compresses, and a compressed answer would be decoded whole in memory
        headers = {"Accept-Encoding": "identity", **({"Authorization": f"Bearer {token}"} if token else {})}
        # http:// and https:// on transports of their own, so that only the latter loads certificates (when used)
        # (http:// over the standard library's http.client: registry.plain_http)
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport or
                                 PlainHttpTransport(), mounts={"https://": transport or _TlsWhenAsked()})
        root = default_cache_dir() if cache is None or cache is True else (Path(cache) if cache else None)
        self.cache = LocalCache(root) if root is not None else None
        self.retries, self.backoff_s, self.inline, self.timeout = retries, backoff_s, inline, timeout
        self.offline = offline_from_env() if offline is None else offline

    def close(self) -> None:
        self.http.close()
        if "_storage_http" in self.__dict__:
            self._storage_http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The whole answer (at most MAX_ANSWER_BYTES: a file list, an adapter's info; files come streamed), read
        within the timeout. An idempotent request whose answer broke off is sent again; one that trickled is not."""
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)
        for attempt in range(attempts):
            try:
                with self._send(method, path, stream=True, **kwargs) as response:
                    return _read_capped(response, MAX_ANSWER_BYTES, self.url, self.timeout)
            except httpx.TransportError as exc:  # while reading the body (_send reports its own as unavailable)
                if attempt == attempts - 1 or isinstance(exc, _TooSlow):
                    raise RegistryUnavailable(f"The registry at {self.url} did not send its whole answer "
                                              f"({type(exc).__name__}: {exc}).") from exc
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _refused(self, answer: httpx.Response) -> NoReturn:
        """An error answer raised as the registry's exception; a refused token that `vera login` stored says so."""
        try:
            _raise_for(answer, self.url)
        except Unauthorized as exc:
            if not self._stored:
                raise
            raise Unauthorized(f"{exc} (The token was the one `vera login` stored for {self.url}: `vera login` with "
                               "a valid one, or `vera logout` to send none.)") from None

    @contextlib.contextmanager
    def _send(self, method: str, path: str, *, stream: bool, **kwargs: Any) -> Iterator[httpx.Response]:
        """The response to a request (its body not yet read when ``stream``), an error status raised as the
        registry's exception; idempotent requests are retried on connection errors and 502/503/504."""
        if self.offline:
            raise RegistryOffline(f"Offline (VERA_OFFLINE): {method} {path.split('?')[0][:200]} was not sent to "
                                  f"{self.url}. Only fetching and loading what this machine fetched before works "
                                  "offline; unset VERA_OFFLINE to reach the registry.")
        attempts = 1 + (self.retries if method in IDEMPOTENT else 0)  # (sent again on 502/503/504 too)
        url = self._url(path, kwargs.pop("params", None))
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                request = self.http.build_request(method, url, **kwargs)
                if (request_id := REQUEST_ID.get()) is not None:  # the work of one request, in the registry's log too
                    request.headers[HEADER] = request_id
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not last:
                    time.sleep(self.backoff_s * 2**attempt)
                    continue
                raise RegistryUnavailable(f"Cannot reach the registry at {self.url} ({type(exc).__name__}: {exc}). "
                                          "Is it running? Start one with `vera up`, or set VERA_REGISTRY_URL."
                                          ) from exc
            try:
                encoding = response.headers.get("content-encoding", "").strip().lower()
                if encoding not in ("", "identity"):  # asked for none: decoding nested layers could take gigabytes
                    raise RegistryError(_not_the_api(self.url, f"answered with Content-Encoding {encoding[:40]!r} "
                                                               "though asked for none"))
                wait = self._retry_wait(response, attempt)
                if wait is not None and not last:
                    time.sleep(wait)
                    continue
                if response.status_code >= 400:
                    self._refused(_read_capped(response, MAX_ERROR_BYTES, self.url, self.timeout))
                if response.headers.get("content-type", "").startswith("text/html"):  # the API never answers HTML
                    raise RegistryError(_not_the_api(self.url, "answered with an HTML page"))
                yield response
                return
            finally:
                response.close()

    def _url(self, path: str, params: Any) -> str:
        """The absolute URL of a path on the registry, with its query: httpx then parses it once, instead of
        joining it to the base URL and merging the parameters (a third of a small request's client time)."""
        url = self.url + path if path.startswith("/") else path
        if params:
            url += ("&" if "?" in url else "?") + str(httpx.QueryParams(params))
        return url

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending an idempotent request again, or None: 502/503/504 back off exponentially;
        429 and 503 wait as Retry-After says, if it is short (MAX_RETRY_AFTER_S), else the error is reported."""
        if response.status_code not in RETRY_STATUSES:
            return None
        retry_after = response.headers.get("retry-after", "")
        if retry_after.isascii() and retry_after.isdigit():
            return float(retry_after) if float(retry_after) <= MAX_RETRY_AFTER_S else None
        return None if response.status_code == 429 else self.backoff_s * 2**attempt

    @staticmethod
    def _path(ref: str | Ref) -> str:
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        selector = str(ref.version) if ref.version is not None else (ref.alias or "latest")
        return f"/api/v1/adapters/{ref.owner}/{ref.name}/versions/{selector}"

    # ---- reads ---------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return dict(self._request("GET", "/health").json())

    def list_versions(
        self, *, owner: str | None = None, name: str | None = None, base_model: str | None = None,
        r: int | None = None, seed: int | None = None, generator: str | None = None, tag: str | None = None,
        q: str | None = None, include_yanked: bool | None = None, cursor: str | None = None, limit: int | None = None,
        sort: str | None = None, with_total: bool | None = None, filter: str | None = None,
        latest: bool | None = None,
    ) -> Page:
        """One page of versions (the API's filters; None leaves the server's default). ``filter``: MLflow-style
        clauses joined by 'and', e.g. ``metrics.accuracy > 0.9 and r <= 256``; ``sort`` may be ``-metrics.<key>``.
        ``latest``: one version an adapter, its newest that the filters match; a registry older than the parameter
        (which ignores it) is told by a page holding two versions of one adapter, and refused as such."""
        filters = {"owner": owner, "name": name, "base_model": base_model, "r": r, "seed": seed,
                   "generator": generator, "tag": tag, "q": q, "include_yanked": include_yanked, "cursor": cursor,
                   "limit": limit, "sort": sort, "with_total": with_total, "filter": filter, "latest": latest}
        params = {k: v for k, v in filters.items() if v is not None}
        page = Page.model_validate(self._request("GET", "/api/v1/adapters", params=params).json())
        names = [(v.owner, v.name) for v in page.items]
        if latest and len(set(names)) < len(names):
            raise RegistryError(f"The registry at {self.url} lists every version where one an adapter was asked "
                                "(latest=true): it predates that parameter. Upgrade it, or list without it.")
        return page

    def get(self, ref: str | Ref) -> VersionInfo:
        return self._following_moves(ref, lambda at: VersionInfo.model_validate(
            self._request("GET", self._path(at)).json()))

    def lookup(self, refs: Iterable[str | Ref], *, follow_moves: bool = True) -> dict[str, VersionInfo | None]:
        """What each reference names now (owner/name:N, owner/name@ALIAS, owner/name), keyed by the reference as
        given: its version, or None where the registry has none this client may read. MAX_LOOKUP a request
        (POST /api/v1/adapters/lookup), however many are given. A name an adapter had before it moved (`vera mv`) is
        looked up where the registry says it is now, with a warning to update the reference, as ``get`` follows it
        (one more request for them all); ``follow_moves=False``: None for it."""
        texts = list(dict.fromkeys(str(ref) for ref in refs))
        answers = self._looked_up(texts)
        found = {r.requested: r.version for r in answers}
        moved: dict[str, str] = {}  # reference asked -> the same reference under the adapter's name now
        renames: set[tuple[str, str]] = set()
        for answer in answers:
            if follow_moves and answer.version is None and answer.moved_to:
                ref, (owner, _, name) = Ref.parse(answer.requested), answer.moved_to.partition("/")
                with contextlib.suppress(InvalidInput):  # (a name no reference could hold: not followed)
                    moved[answer.requested] = str(Ref.of(owner, name, version=ref.version, alias=ref.alias))
                    renames.add((f"{ref.owner}/{ref.name}", f"{owner}/{name}"))
        if moved:
            for old, new in sorted(renames):  # one warning an adapter, however many of its references
                _moved_warning(old, new)
            there = {r.requested: r.version for r in self._looked_up(list(dict.fromkeys(moved.values())))}
            found.update((asked, there.get(new)) for asked, new in moved.items())
        return found

    def _looked_up(self, texts: list[str]) -> list[LookedUp]:
        """The registry's answers for ``texts`` (distinct references), MAX_LOOKUP a request."""
        answers: list[LookedUp] = []
        for start in range(0, len(texts), MAX_LOOKUP):
            try:
                answer = self._request("POST", "/api/v1/adapters/lookup",
                                       json={"refs": texts[start:start + MAX_LOOKUP]})
            except NotFound:  # the route answers no 404 of its own: a registry of a release before it
                raise NotFound(f"The registry at {self.url} has no lookup (POST /api/v1/adapters/lookup, "
                               "2026-12): it runs an older release. Upgrade it, or read each version (`vera show "
                               "REF`, RegistryClient.get).") from None
            answers.extend(Lookup.model_validate_json(answer.content).results)
        return answers

    def _following_moves(self, ref: str | Ref, read: Callable[[Ref], T]) -> T:
        """``read(ref)``; when the adapter ``ref`` names has moved (renamed or transferred: the registry says where
        to a caller that may read it there), ``read`` once more under its new name, with a warning to update the
        reference, as huggingface_hub follows a renamed repo. Writes never follow."""
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        try:
            return read(ref)
        except NotFound as exc:
            owner, _, name = (exc.moved_to or "").partition("/")
            try:
                moved = Ref.of(owner, name, version=ref.version, alias=ref.alias)
            except InvalidInput:
                raise exc from None
            _moved_warning(f"{ref.owner}/{ref.name}", f"{moved.owner}/{moved.name}")
            return read(moved)

    def files(self, ref: str | Ref, *, with_projection: bool = False, seed_only: bool = False, as_lora: bool = False,
              lora: dict[str, Any] | None = None, inline: int = 0) -> FileManifest:
        """The version's files in one download form (see ``fetch``), each with its size, SHA-256 and immutable URL;
        the server builds and stores them the first time anyone asks. ``inline``: the bytes of files of at most
        this many bytes (up to 1 MiB) come too, base64 in each entry's ``content``."""
        params = self._file_params(with_projection=with_projection, seed_only=seed_only, as_lora=as_lora, lora=lora)
        return self._list(ref, {**params, "inline": str(inline)} if inline else params)

    def _list(self, ref: str | Ref, params: dict[str, str]) -> FileManifest:
        response = self._request("GET", f"{self._path(ref)}/files", params=params)
        return FileManifest.model_validate_json(response.content)  # parsed and checked in one pass

    def fetch(self, ref: str | Ref, out_dir: str | os.PathLike[str], *, with_projection: bool = False,
              seed_only: bool = False, as_lora: bool = False, lora: dict[str, Any] | None = None,
              progress: bool = False) -> Path:
        """Download the PEFT directory (pinned to one version even if an alias moves meanwhile): by default files
        PEFT loads correctly, ``with_projection`` / ``seed_only`` force A and B in or out (Registry.files);
        ``as_lora`` downloads the equivalent LoRA instead (``lora``: the API's max_rank, dtype and for options; a
        rank-capped export adds README.md with each layer's error). One request lists the files with their SHA-256;
        each file the local cache lacks then streams to disk (from the object store when the server redirects
        there), checked against its hash: fetching a version again costs that one small request. ``progress``
        shows a bar for files over 4 MiB."""
        self.fetch_files(ref, out_dir, with_projection=with_projection, seed_only=seed_only, as_lora=as_lora,
                         lora=lora, progress=progress)
        return Path(out_dir)

    def fetch_files(self, ref: str | Ref, out_dir: str | os.PathLike[str], *, with_projection: bool = False,
                    seed_only: bool = False, as_lora: bool = False, lora: dict[str, Any] | None = None,
                    progress: bool = False) -> FileManifest:
        """``fetch``, returning the file list it wrote (with the version it pinned; when the cache answered, the
        version's details as they were when it was cached: ``get`` has them now)."""
        return self._following_moves(ref, lambda at: self._fetch_files(
            at, out_dir, with_projection=with_projection, seed_only=seed_only, as_lora=as_lora, lora=lora,
            progress=progress))

    def _fetch_files(self, ref: Ref, out_dir: str | os.PathLike[str], *, with_projection: bool, seed_only: bool,
                     as_lora: bool, lora: dict[str, Any] | None, progress: bool) -> FileManifest:
        params = self._file_params(with_projection=with_projection, seed_only=seed_only, as_lora=as_lora, lora=lora)
        key = ref_key(self.url, self._path(ref), params)
        if self.offline:
            return self._fetch_cached(ref, self._remembered(ref, [params]), out_dir)
        cached_list = self._cached_list(ref, key, params) if self.cache is not None else None
        # else the list with the small files' bytes (inline): a small adapter in one request
        listed = {**params, "inline": str(self.inline)} if self.inline else params
        manifest = cached_list or self._list(ref, listed)
        with contextlib.ExitStack() as stack:
            try:
                files = self._gather(manifest, out_dir, stack, progress=progress)
            except NotFound:  # the form forgotten between its listing and the download (VERA_DERIVED_MAX_BYTES
                # keeps the registry's download forms within a size): listed again, which builds the same bytes
                manifest, cached_list = self._list(ref, listed), None
                files = self._gather(manifest, out_dir, stack, progress=progress)
            write_adapter_files(Path(out_dir), files)
        if self.cache is not None and cached_list is None:
            self.cache.remember(key, manifest)
        return manifest

    def _remembered(self, ref: Ref, forms: list[dict[str, str]]) -> FileManifest:
        """Offline: the file list the cache last kept for ``ref`` in the first of ``forms`` it has one for."""
        for params in forms:
            if self.cache is not None and (manifest := self.cache.last(ref_key(self.url, self._path(ref), params))):
                return manifest
        where = f"the cache at {self.cache.root}" if self.cache is not None else "no cache (VERA_NO_CACHE)"
        raise RegistryOffline(f"Offline (VERA_OFFLINE): {ref} was never fetched from {self.url} into {where} in "
                              "this form; fetch it once with the registry reachable, or unset VERA_OFFLINE.")

    def _fetch_cached(self, ref: Ref, manifest: FileManifest, out_dir: str | os.PathLike[str]) -> FileManifest:
        """Offline: ``manifest``'s files written from the cache (each re-hashed), or RegistryOffline naming what the
        cache lacks; nothing is written then."""
        assert self.cache is not None  # (_remembered found the list there)
        files: dict[str, bytes | Path] = {}
        for entry in manifest.files:
            _check_listed(entry)
            if (cached := self.cache.blob(entry.sha256)) is None:
                raise RegistryOffline(f"Offline (VERA_OFFLINE): {entry.name} of {manifest.version.ref} (as {ref} "
                                      f"gave it) is no longer in the cache at {self.cache.root}; fetch it again with "
                                      "the registry reachable.")
            files[entry.name] = cached
        write_adapter_files(Path(out_dir), files)
        return manifest

    def _gather(self, manifest: FileManifest, out_dir: str | os.PathLike[str], stack: contextlib.ExitStack, *,
                progress: bool) -> dict[str, bytes | Path]:
        """The listed files: from the cache, inline in the list, or downloaded into a temporary folder that
        ``stack`` removes."""
        files: dict[str, bytes | Path] = {}
        scratch: Path | None = None  # a temporary folder, made only when something is downloaded
        for entry in manifest.files:
            _check_listed(entry)
            cached = self.cache.blob(entry.sha256) if self.cache is not None else None
            if cached is not None:
                files[entry.name] = cached
            elif entry.content is not None:  # checked in memory; written to the cache and the folder
                files[entry.name] = data = _inline_bytes(entry, manifest.version.ref)
                if self.cache is not None:
                    self.cache.put(entry.sha256, data)
            else:
                if scratch is None:
                    parent = self.cache.blobs if self.cache is not None else Path(out_dir).resolve().parent
                    parent.mkdir(parents=True, exist_ok=True)
                    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".fetch-", dir=parent)))
                files[entry.name] = self._obtain(entry, scratch, manifest.version.ref, progress=progress)
        return files

    def _cached_list(self, ref: str | Ref, key: str, params: dict[str, str]) -> FileManifest | None:
        """The cached file list this reference gives today, if the cache holds it: one HEAD request names the
        pinned version and the list's digest. None when the reference was never fetched here (one GET with the
        files inline is then cheaper than two requests) or when the registry answers no digest."""
        assert self.cache is not None
        if not self.cache.seen(key):
            return None
        try:
            response = self._request("HEAD", f"{self._path(ref)}/files", params=params)
        except RegistryUnavailable:
            raise
        except RegistryError:  # an older registry, or an error the GET then explains (a HEAD answer has no body)
            return None
        cached = self.cache.listing(response.headers.get("x-vera-files", ""))
        yanked = response.headers.get("x-vera-yanked")
        if cached is None or yanked not in ("true", "false"):  # (a registry before 2026-12-06 says nothing of it)
            return cached
        # the version's yank as it is now: the cached list kept the one of its first fetch (a re-check, session 47)
        reason = (unquote(response.headers.get("x-vera-yank-reason", "")) or None) if yanked == "true" else None
        return cached.model_copy(update={"version": cached.version.model_copy(update={
            "yanked": yanked == "true", "yank_reason": reason})})

    def _obtain(self, entry: FileEntry, scratch: Path, ref: str, *, progress: bool) -> Path:
        """One listed file downloaded into ``scratch`` and, with a cache, moved into the cache's blobs."""
        # checked first: what the registry listed becomes a URL the client sends its token to
        if not entry.url.startswith("/") or entry.url.startswith("//"):
            raise IntegrityError(f"The registry listed {entry.name} at {entry.url[:200]!r}; expected a path on "
                                 "the registry itself.")
        path = scratch / entry.name
        self._download_to(path, entry, ref, progress=progress)
        if self.cache is None:
            return path
        os.replace(path, self.cache.blobs / entry.sha256)  # sha256: 64 hex digits (FileEntry checks it)
        return self.cache.blobs / entry.sha256

    def _download_to(self, path: Path, entry: FileEntry, ref: str, *, progress: bool) -> None:
        """Stream one file to ``path``, checked against its SHA-256; nothing of a failed or mismatching download is
        left behind. A download that breaks off, or whose presigned link the object store refuses (expired), is
        asked for again (retries)."""
        for attempt in range(self.retries + 1):
            try:
                return self._download_once(path, entry, ref, progress=progress)
            except (httpx.TransportError, _LinkRefused) as exc:
                if attempt == self.retries:
                    what = ("the object store refused its download link" if isinstance(exc, _LinkRefused)
                            else "the download was too slow" if isinstance(exc, _TooSlow)
                            else "the download broke off")
                    raise RegistryUnavailable(f"{entry.name} of {ref}: {what} ({type(exc).__name__}: {exc}), "
                                              f"{attempt + 1} times; fetch again.") from exc
                time.sleep(self.backoff_s * 2**attempt)

    def _download_once(self, path: Path, entry: FileEntry, ref: str, *, progress: bool) -> None:
        with self._send("GET", entry.url, stream=True) as response:
            if not response.is_redirect:
                return self._save(response, path, entry, ref, progress=progress)
            location = response.url.join(response.headers["location"])
        # a presigned URL carries its own authorisation: the registry's token is not sent to the object store
        with self._storage_http.stream("GET", location) as response:
            if response.status_code >= 400:
                raise _LinkRefused(f"{response.status_code} {next(response.iter_raw(300), b'')[:300]!r}")
            return self._save(response, path, entry, ref, progress=progress)

    @functools.cached_property
    def _storage_http(self) -> httpx.Client:
        return httpx.Client(timeout=self.http.timeout, verify=shared_ssl_context())

    def _save(self, response: httpx.Response, path: Path, entry: FileEntry, ref: str, *, progress: bool) -> None:
        digest, size = hashlib.sha256(), 0
        deadline = time.monotonic() + self.timeout + entry.size / MIN_DOWNLOAD_BYTES_PER_S
        with new_file(path.parent, path) as out, _progress(entry.name, entry.size, progress) as bar:
            # each piece as it comes (the deadline is checked per piece), and as sent: a body the server encoded
            # fails the hash, undecoded
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > entry.size:  # raised inside: the temporary file is removed; nothing past the size is kept
                    raise IntegrityError(f"{entry.name} of {ref} ran past the {entry.size:,} bytes the registry "
                                         "listed; the download was damaged or is not the registry's, fetch again.")
                _deadline_passed(deadline, f"{entry.name} of {ref}", response.request)
                digest.update(chunk)
                out.write(chunk)
                bar(len(chunk))
            if digest.hexdigest() != entry.sha256:  # raised inside: the temporary file is removed, never renamed
                raise IntegrityError(f"{entry.name} of {ref} arrived with SHA-256 {digest.hexdigest()[:16]}..., not "
                                     f"the {entry.sha256[:16]}... the registry listed; the download was damaged, "
                                     "fetch again.")

    def load_adapter(self, base_model: torch.nn.Module, ref: str | Ref, *, is_trainable: bool = False,
                     cache_dir: str | os.PathLike[str] | None = None) -> VeraModel:
        """``base_model`` with the version ``ref`` names loaded: one line, like PEFT's ``from_pretrained``.

        The version's files are cached under ``cache_dir`` (default: VERA_CACHE_DIR, else ~/.cache/vera-registry)
        by version number, as versions never change; the next load of the same version downloads nothing. A
        seed-reproducible version is fetched seed-only and its projections regenerated here, checked against the
        recorded fingerprint (vera_core.load_adapter), so what runs is proven to be what was trained."""
        from vera_core.checkpoint import load_adapter as load

        def pinned_at(asked: Ref) -> tuple[VersionInfo, Ref]:
            info = VersionInfo.model_validate(self._request("GET", self._path(asked)).json())
            pinned = Ref.of(info.owner, info.name, version=info.version)  # the server's names, checked: no "/" or ".."
            if (pinned.owner, pinned.name) != (asked.owner, asked.name):
                raise IntegrityError(f"{self.url} answered {pinned} for {asked}; it is not a registry to load from.")
            return info, pinned

        asked = Ref.parse(ref) if isinstance(ref, str) else ref
        root = Path(cache_dir) if cache_dir else cache_root()
        if self.offline:  # a version loaded before, or the files the cache kept for this reference
            return load(base_model, self._offline_folder(asked, root), is_trainable=is_trainable)
        info, pinned = self._following_moves(asked, pinned_at)  # a moved adapter: checked under its new name
        params = self._file_params(seed_only=info.seed_reproducible, with_projection=not info.seed_reproducible)
        folder = self._version_folder(root, pinned)
        listed: FileManifest | None = None
        if not _complete(folder):
            listed = self.fetch_files(str(pinned), folder, seed_only=info.seed_reproducible,
                                      with_projection=not info.seed_reproducible)
        elif self.cache is not None:
            listed = self.cache.last(ref_key(self.url, self._path(pinned), params))
        if listed is not None and self.cache is not None and self._path(asked) != self._path(pinned):
            # what an alias or latest gave, for an offline load by the same reference
            self.cache.remember(ref_key(self.url, self._path(asked), params), listed)
        return load(base_model, folder, is_trainable=is_trainable)

    def _version_folder(self, root: Path, pinned: Ref) -> Path:
        """Where ``load_adapter`` keeps a version's files (two registries' alice/x:1 differ)."""
        registry = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return root / "adapters" / registry / pinned.owner / pinned.name / str(pinned.version)

    def _offline_folder(self, asked: Ref, root: Path) -> Path:
        """Offline: the folder of the version ``asked`` named when this machine loaded or fetched it before, written
        from the cache if needed; RegistryOffline if neither has it."""
        if asked.version is not None and _complete(folder := self._version_folder(root, asked)):
            return folder
        manifest = self._remembered(asked, [self._file_params(seed_only=True), self._file_params(with_projection=True),
                                            self._file_params()])
        if not _complete(folder := self._version_folder(root, Ref.parse(manifest.version.ref))):
            self._fetch_cached(asked, manifest, folder)
        return folder

    @staticmethod
    def _file_params(*, with_projection: bool = False, seed_only: bool = False, as_lora: bool = False,
                     lora: dict[str, Any] | None = None) -> dict[str, str]:
        params = {"format": "lora" if as_lora else "vera", **{k: str(v) for k, v in (lora or {}).items()
                                                                 if v is not None}}
        if with_projection:
            params["projection"] = "true"
        if seed_only:
            params["seed_only"] = "true"
        return params

    def download(self, ref: str | Ref, filename: str, *, with_projection: bool = False, seed_only: bool = False,
                 as_lora: bool = False, lora: dict[str, Any] | None = None, inspect: bool = False) -> bytes:
        """One file's bytes, in memory (``fetch`` streams to disk and caches). ``inspect``: the bytes are read to
        be shown, not used (a dashboard's analysis): the registry does not count it as a download."""
        params = self._file_params(with_projection=with_projection, seed_only=seed_only, as_lora=as_lora, lora=lora)
        headers = {"X-Vera-Purpose": "inspect"} if inspect else None
        return self._request("GET", f"{self._path(ref)}/files/{filename}", params=params, headers=headers).content

    @staticmethod
    def _adapter_path(adapter: str) -> str:
        ref = Ref.parse_adapter(adapter)
        return f"/api/v1/adapters/{ref.owner}/{ref.name}"

    def adapter(self, adapter: str) -> AdapterInfo:
        """``owner/name`` as a whole: description, model card, version count and aliases."""
        return AdapterInfo.model_validate(self._request("GET", self._adapter_path(adapter)).json())

    def lineage(self, ref: str | Ref, *, depth: int | None = None, limit: int | None = None) -> LineageGraph:
        """The version's ancestors and descendants (server bounds: 20 generations, 200 versions each way)."""
        params = {k: v for k, v in (("depth", depth), ("limit", limit)) if v is not None}
        return LineageGraph.model_validate(self._request("GET", f"{self._path(ref)}/lineage", params=params).json())

    def verify(self, ref: str | Ref) -> VerificationReport:
        return VerificationReport.model_validate(self._request("POST", f"{self._path(ref)}/verify").json())

    def compare(self, refs: list[str]) -> Comparison:
        return Comparison.model_validate(self._request("POST", "/api/v1/compare", json={"refs": refs}).json())

    def base_models(self) -> list[BaseModelInfo]:
        return [BaseModelInfo.model_validate(b) for b in self._request("GET", "/api/v1/base-models").json()]

    # ---- writes --------------------------------------------------------------------------------------------
    def register_base_model(self, name: str, config: dict[str, Any], *, revision: str = "") -> BaseModelInfo:
        """Declare a base model's layer shapes from its transformers config (the content of config.json)."""
        body = {"name": name, "revision": revision, "config": config}
        return BaseModelInfo.model_validate(self._request("POST", "/api/v1/base-models", json=body).json())

    def remove_base_model(self, name: str, *, revision: str = "") -> BaseModelInfo:
        """Forget a base model's shapes that no version uses (registry admins): wrong shapes declared under a name."""
        return BaseModelInfo.model_validate(self._request(
            "DELETE", "/api/v1/base-models", params={"name": name, "revision": revision}).json())

    def publish(
        self, directory: str | os.PathLike[str], name: str, *, base_model: str, base_revision: str = "",
        metrics: dict[str, Any] | None = None, tags: list[str] | None = None, description: str = "",
        parent: str | None = None, code_revision: str | None = None, visibility: str | None = None,
        progress: bool = False, dataset: str | os.PathLike[str] | None = None,
        properties: dict[str, str] | None = None, params: dict[str, str] | None = None,
        dataset_sha256: str | None = None, dataset_bytes: int | None = None, copied_from: str | None = None,
    ) -> VersionInfo:
        """Upload a PEFT adapter directory as the next version of ``owner/name``; ``parent`` (a ref) is the version
        it was fine-tuned from, ``code_revision`` the code that trained it and ``dataset`` the file it was trained
        on, hashed here (SHA-256 and size recorded; the data is not uploaded), or ``dataset_sha256`` and
        ``dataset_bytes`` as known; ``copied_from`` the version of another registry it copies (its URL and ref):
        its lineage. ``properties``: its key=value properties; ``params``: what it was trained with
        (vera_core.recipes.published_params of a metrics.json), never changed after. ``progress`` shows a bar while
        weights over 4 MiB upload."""
        ref = Ref.parse_adapter(name)
        root = Path(directory)
        if (wrong := not_a_folder(root)) is not None:
            raise InvalidInput(wrong)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            if not (root / f).is_file():  # a PEFT folder saved as a pickle was called no PEFT folder (session 47)
                raise InvalidInput(f"{root} has no {f}" + (f". {PICKLE_HINT}" if f == WEIGHTS_NAME and (
                    root / PICKLE_NAME).exists() else "; expected a PEFT adapter folder."))
        stated = (("dataset_sha256", dataset_sha256), ("dataset_bytes", dataset_bytes))
        data = (_dataset_fields(Path(dataset)) if dataset is not None
                else {k: str(v) for k, v in stated if v is not None})
        if copied_from is not None:
            data["copied_from"] = copied_from
        size = (root / "adapter_model.safetensors").stat().st_size
        with (root / "adapter_config.json").open("rb") as config, \
                (root / "adapter_model.safetensors").open("rb") as file, \
                _progress("adapter_model.safetensors", size, progress) as bar:
            weights = _Counted(file, bar)
            response = self._request(
                "POST", f"/api/v1/adapters/{ref.owner}/{ref.name}/versions",
                files={"adapter_config": ("adapter_config.json", config, "application/json"),
                       "adapter_model": ("adapter_model.safetensors", weights, "application/octet-stream")},
                data={"base_model": base_model, "base_revision": base_revision,
                      "metrics": json.dumps(metrics or {}), "tags": ",".join(tags or []),
                      "description": description, "parent": parent or "", "code_revision": code_revision or "",
                      "visibility": visibility or "", **data,
                      **({"properties": json.dumps(properties)} if properties else {}),
                      **({"params": json.dumps(params)} if params else {})},
            )
        return VersionInfo.model_validate(response.json())

    # ---- Hub sync ------------------------------------------------------------------------------------------
    @staticmethod
    def _hub_headers(hub_token: str | None) -> dict[str, str]:
        token = hub_token or os.environ.get("HF_TOKEN")
        return {"X-Hub-Token": token} if token else {}

    def hub_push(self, ref: str | Ref, repo_id: str, *, revision: str = "main", private: bool = False,
                 with_projection: bool = True, as_lora: bool = False, hub_token: str | None = None) -> HubSyncResult:
        """Push a version to a Hub repo (the registry talks to the Hub; the token, default HF_TOKEN, is not kept);
        ``as_lora`` pushes the equivalent LoRA."""
        body = {"repo_id": repo_id, "revision": revision, "private": private, "with_projection": with_projection,
                "format": "lora" if as_lora else "vera"}
        response = self._request("POST", f"{self._path(ref)}/hub/push", json=body,
                                 headers=self._hub_headers(hub_token))
        return HubSyncResult.model_validate(response.json())

    def hub_pull(self, repo_id: str, target: str, *, revision: str = "main", base_model: str | None = None,
                 base_revision: str | None = None, hub_token: str | None = None) -> HubSyncResult:
        """Record the PEFT VeRA adapter of a Hub repo as the next version of ``target`` (owner/name)."""
        body = {"repo_id": repo_id, "target": target, "revision": revision, "base_model": base_model,
                "base_revision": base_revision}
        response = self._request("POST", "/api/v1/hub/pull", json=body, headers=self._hub_headers(hub_token))
        return HubSyncResult.model_validate(response.json())

    def hub_status(self, ref: str | Ref) -> list[HubSyncInfo]:
        return [HubSyncInfo.model_validate(s) for s in self._request("GET", f"{self._path(ref)}/hub").json()]

    # ---- jobs ----------------------------------------------------------------------------------------------
    def submit_job(self, target: str, spec: dict[str, Any], *,
                   dataset: str | os.PathLike[str] | tuple[str, bytes] | None = None, priority: int = 0,
                   time_limit_s: float | None = None, gpus: int = 0, tags: Sequence[str] = (),
                   description: str = "", properties: dict[str, str] | None = None) -> JobInfo:
        """Queue a fine-tune that publishes ``target`` (owner/name); ``spec`` as vera_core.recipes.TrainSpec.
        ``dataset``: a .csv/.jsonl path, or (file name, bytes) as uploaded. Higher ``priority`` runs first;
        ``time_limit_s`` stops its training after that long; ``gpus``: the GPUs its training needs (0: any worker).
        ``tags``, ``description``, ``properties``: what the version it publishes is labelled with (besides the
        fine-tune tag); a registry older than them queues the job without them (the answer's ``result_*`` fields are
        then empty)."""
        files = None
        if isinstance(dataset, tuple):
            files = {"dataset": (dataset[0], dataset[1], "application/octet-stream")}
        elif dataset is not None:
            path = Path(dataset)
            if not path.is_file():
                raise InvalidInput(f"Dataset {path} does not exist.")
            files = {"dataset": (path.name, path.read_bytes(), "application/octet-stream")}
        form = {"target": target, "spec": json.dumps(spec), "priority": str(priority),
                **({"time_limit_s": str(time_limit_s)} if time_limit_s is not None else {}),
                **({"gpus": str(gpus)} if gpus else {}), **({"tags": ",".join(tags)} if tags else {}),
                **({"description": description} if description else {}),
                **({"properties": json.dumps(properties)} if properties else {})}
        response = self._request("POST", "/api/v1/jobs", data=form, files=files)
        return JobInfo.model_validate(response.json())

    def jobs(self, *, owner: str | None = None, status: str | None = None, limit: int = 100) -> list[JobInfo]:
        """The newest ``limit`` jobs you may see, newest first, read a page (at most 500) at a time as the ``Link``
        header names the next (a registry before 2026-12-06 answers its newest 500 at most)."""
        params = {k: v for k, v in (("owner", owner), ("status", status)) if v}
        found: list[JobInfo] = []
        for item in self._every_page("/api/v1/jobs", {**params, "limit": str(min(limit, JOB_PAGE))}, "before"):
            found.append(JobInfo.model_validate(item))
            if len(found) >= limit:
                break
        return found

    def job(self, job_id: int) -> JobInfo:
        return JobInfo.model_validate(self._request("GET", f"/api/v1/jobs/{job_id}").json())

    def job_events(self, job_id: int, *, after: int = 0, kind: str | None = None,
                   limit: int | None = None) -> list[JobEventInfo]:
        """One page of the job's events after event id ``after``, oldest first: at most ``limit`` (None: the
        registry's page, 1,000 since 2026-12-06; an older registry answers them all). ``each_job_event`` reads on."""
        params: dict[str, Any] = {"after": after, **({"kind": kind} if kind else {}),
                                  **({"limit": limit} if limit is not None else {})}
        return [JobEventInfo.model_validate(e)
                for e in self._request("GET", f"/api/v1/jobs/{job_id}/events", params=params).json()]

    def each_job_event(self, job_id: int, *, after: int = 0, kind: str | None = None,
                       pages: int | None = None) -> Iterator[JobEventInfo]:
        """The job's events after event id ``after``, oldest first, a page at a time until one is short (at most
        ``pages`` of them; None: to the end)."""
        read = 0
        while pages is None or read < pages:
            page = self.job_events(job_id, after=after, kind=kind, limit=JOB_EVENT_PAGE)
            read += 1
            yield from page
            if len(page) < JOB_EVENT_PAGE:
                return
            after = page[-1].id

    def cancel_job(self, job_id: int) -> JobInfo:
        return JobInfo.model_validate(self._request("POST", f"/api/v1/jobs/{job_id}/cancel").json())

    def set_alias(self, ref: str, alias: str) -> VersionInfo:
        parsed = Ref.parse(ref)
        version = parsed.version if parsed.version is not None else self.get(parsed).version
        path = f"/api/v1/adapters/{parsed.owner}/{parsed.name}/aliases/{_segment(alias)}"  # a '/' in it: refused
        return VersionInfo.model_validate(self._request("PUT", path, json={"version": version}).json())

    def remove_alias(self, adapter: str, alias: str) -> None:
        parsed = Ref.parse(adapter)
        self._request("DELETE", f"/api/v1/adapters/{parsed.owner}/{parsed.name}/aliases/{_segment(alias)}")

    def yank(self, ref: str, *, yanked: bool = True, reason: str | None = None) -> VersionInfo:
        """Yank the version ``ref`` names (``yanked=False``: unyank it); ``reason``, why (PEP 592's yank reason,
        said to whoever fetches it; sent only when given: a registry before 2026-12-06 refuses the field)."""
        info = self.get(ref)
        body: dict[str, object] = {"yanked": yanked} | ({"reason": reason} if reason is not None else {})
        return VersionInfo.model_validate(self._request(
            "POST", f"/api/v1/adapters/{info.owner}/{info.name}/versions/{info.version}/yank", json=body).json())

    def update_adapter(self, adapter: str, *, description: str | None = None, card: str | None = None
                       ) -> AdapterInfo:
        """Change an adapter's description and/or model card (None: unchanged)."""
        body = {k: v for k, v in (("description", description), ("card", card)) if v is not None}
        return AdapterInfo.model_validate(self._request("PATCH", self._adapter_path(adapter), json=body).json())

    def update_version(self, ref: str, *, description: str | None = None, tags: list[str] | None = None,
                       add_tags: list[str] | None = None, remove_tags: list[str] | None = None,
                       set_properties: dict[str, str] | None = None, remove_properties: list[str] | None = None
                       ) -> VersionInfo:
        """Change a version's description, tags and key=value properties: ``tags`` replaces them all, or
        ``add_tags``/``remove_tags``; ``set_properties`` gives keys values, ``remove_properties`` drops keys (None:
        unchanged). Its bytes never change."""
        info = self.get(ref)
        body: dict[str, Any] = {} if description is None else {"description": description}
        if tags is not None or add_tags or remove_tags:
            body["tags"] = {"set": tags, "add": add_tags or [], "remove": remove_tags or []}
        if set_properties or remove_properties:
            body["properties"] = {"set": set_properties or {}, "remove": remove_properties or []}
        return VersionInfo.model_validate(self._request(
            "PATCH", f"/api/v1/adapters/{info.owner}/{info.name}/versions/{info.version}", json=body).json())

    def record_evaluation(self, ref: str, name: str, metrics: dict[str, Any], *,
                          details: dict[str, Any] | None = None) -> EvaluationInfo:
        """Record what the version ``ref`` names scored (an alias: the version it names now): ``metrics`` join its
        metrics under ``name``; ``details`` say how they were measured. Conflict if the name is taken there."""
        info = self.get(ref)
        return EvaluationInfo.model_validate(self._request(
            "POST", f"/api/v1/adapters/{info.owner}/{info.name}/versions/{info.version}/evaluations",
            json={"name": name, "metrics": metrics, "details": details or {}}).json())

    def evaluations(self, ref: str) -> list[EvaluationInfo]:
        """The evaluations recorded on the version ``ref`` names, oldest first."""
        info = self.get(ref)
        answer = self._request("GET", f"/api/v1/adapters/{info.owner}/{info.name}/versions/{info.version}/"
                                      "evaluations").json()
        return [EvaluationInfo.model_validate(item) for item in answer]

    def delete_evaluation(self, ref: str, name: str) -> None:
        info = self.get(ref)
        self._request("DELETE", f"/api/v1/adapters/{info.owner}/{info.name}/versions/{info.version}/evaluations/"
                                f"{quote(name, safe='')}")

    def delete(self, ref: str) -> None:
        info = self.get(ref)
        self._request("DELETE", f"/api/v1/adapters/{info.owner}/{info.name}/versions/{info.version}")

    def delete_adapter(self, adapter: str) -> None:
        """Every version of ``owner/name``, and the adapter."""
        self._request("DELETE", self._adapter_path(adapter))

    def move(self, adapter: str, to: str) -> MovedAdapter:
        """Rename ``adapter`` (owner/name) to ``to`` (owner/name; another owner transfers it), with every version,
        alias and tag; returns it under its new name, with the jobs the move retargeted (a rename) or cancelled (a
        transfer). Its old name then answers NotFound naming the new one."""
        answer = self._request("POST", f"{self._adapter_path(adapter)}/move", json={"to": to}).json()
        answer.setdefault("moved_from", adapter)  # a registry from before 2026-12 answered the adapter alone
        return MovedAdapter.model_validate(answer)

    def copy_version(self, source: str | Ref, to: str, *, description: str | None = None,
                     visibility: str | None = None) -> VersionInfo:
        """Copy the version ``source`` names (owner/name:N, owner/name@ALIAS) into ``to`` (owner/name) as its next
        version: the same bytes, metrics, evaluations, parameters, properties, tags and lineage, with
        ``lineage["copied_from"]`` naming the source (MLflow's copy_model_version). ``description`` replaces the
        source's; ``visibility`` is that of ``to`` when the copy makes it. Returns the new version."""
        body: dict[str, Any] = {"to": to}
        if description is not None:
            body["description"] = description
        if visibility is not None:
            body["visibility"] = visibility
        return VersionInfo.model_validate(self._request("POST", f"{self._path(source)}/copy", json=body).json())

    def alias_problem(self, adapter: str, alias: str) -> str | None:
        """Why this registry would refuse to point ``alias`` of ``adapter`` (owner/name) at a version, or None
        (registry.domain.schemas.alias_problem; an alias the adapter has already is not new; an alias its
        organisation protects, for a caller who is not one of its admins): asked before a copy that is then aliased,
        so that a refused alias leaves no copy behind."""
        try:
            existing = self.adapter(adapter).aliases
        except NotFound:  # the copy will make it
            existing = {}
        if (problem := alias_problem(alias, new=alias not in existing)) is not None:
            return problem
        owner = adapter.partition("/")[0]
        if self.protected_from_me(owner, [alias]):  # (a copy left behind, refused its alias: an operator's walk)
            return (f"The alias {alias!r} is protected in {owner}: only its admins point it at a version. Copy "
                    f"without --alias and ask one of them to move it (`vera org show {owner}` lists them).")
        return None

    def protected_from_me(self, owner: str, aliases: Iterable[str]) -> str | None:
        """The first of ``aliases`` that ``owner``, an organisation, protects (`vera org protect`), where the caller
        is not one of its admins nor a registry admin: only they move or remove it, or delete what it names. None
        otherwise, and for an owner the caller is no member of (whose changes the registry refuses anyway). Asked
        before a change that would be refused for it after a question or a copy (an operator's walk, session 48)."""
        names = set(aliases) - {"latest"}
        if not names:
            return None
        me = self.whoami()
        if me.local or "admin" in me.scopes or me.organizations.get(owner, "admin") == "admin":
            return None
        try:
            protected = set(self.organization(owner).protected_aliases)
        except (NotFound, Forbidden):  # (a token limited to other owners): the registry says it, if it refuses
            return None
        return next(iter(sorted(names & protected)), None)

    def copy_to(self, source: str | Ref, destination: RegistryClient, to: str, *, description: str | None = None,
                visibility: str | None = None) -> VersionInfo:
        """Copy the version ``source`` names in this registry into another registry's adapter ``to`` (owner/name)
        as its next version: promotion from a staging registry into a production one, as MLflow copies a model
        version between registries. Its weights are downloaded from here in the form stored (the vectors, and A
        and B only where the seed cannot regenerate them) and published there with its base model, metrics
        (evaluations' included), tags, description (``description`` replaces it), properties, parameters, code
        revision and dataset hash; ``copied_from`` there says this registry's URL and the version's ref. A yanked
        version is refused (Conflict). Its parent, job and evaluations' details are this registry's and stay here."""
        info = self.get(source)
        if info.yanked:
            raise yanked_copy(info.ref, info.yank_reason)
        with tempfile.TemporaryDirectory(prefix="vera-copy-") as folder:
            stored = info.seed_reproducible  # the form stored: A and B only where the seed cannot make them
            self.fetch(info.pinned, folder, seed_only=stored, with_projection=not stored)
            lineage = info.lineage
            return destination.publish(
                folder, to, base_model=info.base_model, base_revision=info.base_revision, metrics=info.metrics,
                tags=info.tags, description=info.description if description is None else description,
                code_revision=lineage.get("code_revision"), visibility=visibility, properties=info.properties,
                params=info.params, dataset_sha256=lineage.get("dataset_sha256"),
                dataset_bytes=lineage.get("dataset_bytes"), copied_from=f"{self.url}/{info.ref}")

    def usage(self, owner: str) -> OwnerUsage:
        """What ``owner``'s adapters store, and its storage quota (None: none): for the user itself, the members of
        an organisation, and admins."""
        return OwnerUsage.model_validate(self._request("GET", f"/api/v1/owners/{_segment(owner)}/usage").json())

    def set_quota(self, owner: str, quota: int | str | None) -> OwnerUsage:
        """Set ``owner``'s storage quota (admins): bytes, a size with a unit ("50GB", "50GiB"), or None for no quota;
        it overrides the registry's settings until ``clear_quota``."""
        return OwnerUsage.model_validate(self._request("PUT", f"/api/v1/owners/{_segment(owner)}/quota",
                                                       json={"quota_bytes": quota}).json())

    def clear_quota(self, owner: str) -> OwnerUsage:
        """Drop the quota an admin set for ``owner`` (admins): the registry's settings hold again."""
        return OwnerUsage.model_validate(self._request("DELETE", f"/api/v1/owners/{_segment(owner)}/quota").json())

    # ---- who may see what: the caller, tokens, organisations (registry.services.access) ----------------------
    def whoami(self) -> WhoAmI:
        return WhoAmI.model_validate(self._request("GET", "/api/v1/whoami").json())

    def tokens(self, *, user: str | None = None) -> list[TokenInfo]:
        """The caller's tokens (admins: everyone's, or ``user``'s)."""
        params = {"user": user} if user else {}
        return [TokenInfo.model_validate(t) for t in self._request("GET", "/api/v1/tokens", params=params).json()]

    def create_token(self, scopes: list[str], *, name: str = "", expires_days: float | None = None,
                     limited_to: list[str] | None = None, user: str | None = None) -> tuple[TokenInfo, str]:
        """A new token (for the caller; admins: for ``user``) and its secret, shown this once."""
        body = {"scopes": scopes, "name": name, "expires_days": expires_days, "limited_to": limited_to,
                "user": user}
        created = self._request("POST", "/api/v1/tokens", json=body).json()
        return TokenInfo.model_validate(created["token"]), str(created["secret"])

    def exchange_identity_token(self, id_token: str) -> tuple[TokenInfo, str]:
        """Trusted publishing: a short-lived registry token (and its secret) for a CI job's OpenID Connect identity
        token, as a trusted publisher of the registry (VERA_TRUSTED_PUBLISHERS) allows. Sent without this client's
        own token: the identity token is the credential."""
        created = self._request("POST", "/api/v1/tokens/oidc", json={"token": id_token},
                                headers={"Authorization": ""}).json()
        return TokenInfo.model_validate(created["token"]), str(created["secret"])

    def trusted_publishers(self) -> list[PublisherInfo]:
        """The registry's trusted publishers this token may see (an administrator's: all; an organisation admin's:
        those publishing into it), with their recent use."""
        return [PublisherInfo.model_validate(p) for p in self._request("GET", "/api/v1/trusted-publishers").json()]

    def revoke_token(self, token_id: int) -> None:
        self._request("DELETE", f"/api/v1/tokens/{int(token_id)}")

    def _every_page(self, path: str, params: dict[str, str] | None = None, key: str = "after") -> Iterator[Any]:
        """Each item of a listing the registry answers a page at a time, the ``Link`` header naming the next page
        (GET /orgs and /invitations by ``after``, /jobs by ``before``; a registry before 2026-12-06 answers all at
        once, with none). Only the next page's query is taken from the header: a link elsewhere is not followed
        (nor sent the token)."""
        params = dict(params or {})
        asked: set[str] = set()  # (the pages' starts, in the database's order, which may not be Python's)
        while True:
            answer = self._request("GET", path, params=params)
            items = answer.json()
            yield from items
            following = dict(parse_qsl(urlsplit(answer.links.get("next", {}).get("url", "")).query))
            if not items or key not in following or following[key] in asked:
                return  # nothing more, or a page asked before: a server that sent it round again would never end
            asked.add(following[key])
            params = following

    def organizations(self) -> list[OrganizationInfo]:
        """The organisations you belong to (admins: all), every page."""
        return [OrganizationInfo.model_validate(o) for o in self._every_page("/api/v1/orgs")]

    def organization(self, name: str) -> OrganizationInfo:
        return OrganizationInfo.model_validate(self._request("GET", f"/api/v1/orgs/{_segment(name)}").json())

    def create_organization(self, name: str, *, description: str = "") -> OrganizationInfo:
        return OrganizationInfo.model_validate(self._request(
            "POST", "/api/v1/orgs", json={"name": name, "description": description}).json())

    def set_member(self, organization: str, member: str, role: str) -> OrganizationInfo:
        """Add ``member`` with ``role``, or change its role. On a registry with invitations on (VERA_ORG_INVITATIONS)
        a user who is not a member is invited instead: the answer lists them in ``invitations``, not ``members``
        (``OrganizationInfo.invited``)."""
        return OrganizationInfo.model_validate(self._request(
            "PUT", f"/api/v1/orgs/{_segment(organization)}/members/{_segment(member)}", json={"role": role}).json())

    def remove_member(self, organization: str, member: str) -> OrganizationInfo:
        return OrganizationInfo.model_validate(self._request(
            "DELETE", f"/api/v1/orgs/{_segment(organization)}/members/{_segment(member)}").json())

    def protect_alias(self, organization: str, alias: str) -> OrganizationInfo:
        """Protect ``alias`` in every adapter of the organisation: only its admins move it from then on."""
        return OrganizationInfo.model_validate(self._request(
            "PUT", f"/api/v1/orgs/{_segment(organization)}/protected-aliases/{_segment(alias)}").json())

    def unprotect_alias(self, organization: str, alias: str) -> OrganizationInfo:
        """Let the organisation's writers move ``alias`` again."""
        return OrganizationInfo.model_validate(self._request(
            "DELETE", f"/api/v1/orgs/{_segment(organization)}/protected-aliases/{_segment(alias)}").json())

    def invitations(self) -> list[InvitationInfo]:
        """Your pending invitations to organisations."""
        return [InvitationInfo.model_validate(i) for i in self._every_page("/api/v1/invitations")]

    def accept_invitation(self, organization: str) -> OrganizationInfo:
        """Join ``organization`` with the role you were invited to (NotFound when no invitation is pending)."""
        return OrganizationInfo.model_validate(self._request(
            "POST", f"/api/v1/invitations/{_segment(organization)}").json())

    def decline_invitation(self, organization: str) -> None:
        """Decline your invitation to ``organization`` (NotFound when none is pending)."""
        self._request("DELETE", f"/api/v1/invitations/{_segment(organization)}")

    def cancel_invitation(self, organization: str, member: str) -> OrganizationInfo:
        """Cancel ``member``'s pending invitation to ``organization`` (its admins)."""
        return OrganizationInfo.model_validate(self._request(
            "DELETE", f"/api/v1/orgs/{_segment(organization)}/invitations/{_segment(member)}").json())

    def delete_organization(self, name: str) -> None:
        """Delete organisation ``name`` (its admins; the registry's admins): Conflict while it owns adapters, queued
        or running jobs or webhooks, saying which and how to clear them."""
        self._request("DELETE", f"/api/v1/orgs/{_segment(name)}")

    def rename_organization(self, name: str, new_name: str) -> OrganizationInfo:
        """Rename organisation ``name`` to ``new_name`` (its admins; the registry's admins): its adapters, ended
        jobs, webhooks, quota and the tokens limited to it follow, and ``name`` is retired; Conflict while it has
        queued or running jobs, or when ``new_name`` is taken or retired. The organisation under its new name."""
        return OrganizationInfo.model_validate(self._request(
            "POST", f"/api/v1/orgs/{_segment(name)}/rename", json={"new_name": new_name}).json())

    def set_visibility(self, adapter: str, visibility: str) -> AdapterInfo:
        """Make ``owner/name`` public or private (writers of its owner)."""
        ref = Ref.parse(adapter)
        return AdapterInfo.model_validate(self._request(
            "PATCH", f"/api/v1/adapters/{ref.owner}/{ref.name}", json={"visibility": visibility}).json())

    def set_retention(self, adapter: str, *, keep_last: int | None = None, keep_days: float | None = None
                      ) -> AdapterInfo:
        """Give ``owner/name`` its own retention rule (writers of its owner): about once an hour the registry deletes
        the versions that neither ``keep_last`` (the newest N) nor ``keep_days`` (those published in the last D days)
        keeps, never one an alias other than latest points at; neither given: the rule is removed."""
        ref = Ref.parse(adapter)
        rule = RetentionInfo(keep_last=keep_last, keep_days=keep_days).model_dump(exclude_none=True)
        return AdapterInfo.model_validate(self._request(
            "PATCH", f"/api/v1/adapters/{ref.owner}/{ref.name}", json={"retention": rule}).json())

    def retention_preview(self, adapter: str, *, keep_last: int | None = None, keep_days: float | None = None,
                          limit: int | None = None) -> RetentionPreview:
        """What ``owner/name``'s own retention rule, or the rule ``keep_last``/``keep_days`` give, would delete now
        (nothing is changed): ``would_delete`` lists them all, or the oldest ``limit``; ``total`` counts them all, and
        ``applied`` says whether the registry applies rules now."""
        ref = Ref.parse(adapter)
        params: dict[str, Any] = RetentionInfo(keep_last=keep_last, keep_days=keep_days).model_dump(exclude_none=True)
        if limit is not None:
            params["limit"] = limit
        return RetentionPreview.model_validate(self._request(
            "GET", f"/api/v1/adapters/{ref.owner}/{ref.name}/retention", params=params).json())

    # ---- events and webhooks (docs/webhooks.md) --------------------------------------------------------------
    def events(self, *, owner: str | None = None, adapter: str | None = None, action: str | None = None,
               after: int | None = None, since: str | None = None, limit: int = 50) -> EventPage:
        """Audit events the caller may read, oldest first: after id ``after`` (the ``next_after`` of the page
        before) or from ``since`` (ISO 8601), else the newest ``limit``."""
        params = {k: v for k, v in (("owner", owner), ("adapter", adapter), ("action", action), ("after", after),
                                    ("since", since), ("limit", limit)) if v is not None}
        return EventPage.model_validate(self._request("GET", "/api/v1/events", params=params).json())

    def webhooks(self, owner: str | None = None) -> list[WebhookInfo]:
        """The webhooks of ``owner`` (default: the token's own namespace)."""
        params = {"owner": owner} if owner else {}
        return [WebhookInfo.model_validate(w) for w in self._request("GET", "/api/v1/webhooks", params=params).json()]

    def create_webhook(self, owner: str, url: str, *, events: list[str] | None = None, description: str = "",
                       active: bool = True) -> WebhookCreated:
        """A new webhook for ``owner``'s adapter events; the answer holds its secret, shown this once."""
        body = {"owner": owner, "url": url, "events": events, "description": description, "active": active}
        return WebhookCreated.model_validate(self._request("POST", "/api/v1/webhooks", json=body).json())

    def webhook(self, webhook_id: int) -> WebhookInfo:
        return WebhookInfo.model_validate(self._request("GET", f"/api/v1/webhooks/{webhook_id}").json())

    def update_webhook(self, webhook_id: int, *, url: str | None = None, events: list[str] | None = None,
                       description: str | None = None, active: bool | None = None) -> WebhookInfo:
        body = {k: v for k, v in (("url", url), ("events", events), ("description", description),
                                  ("active", active)) if v is not None}
        return WebhookInfo.model_validate(self._request("PATCH", f"/api/v1/webhooks/{webhook_id}", json=body).json())

    def delete_webhook(self, webhook_id: int) -> None:
        self._request("DELETE", f"/api/v1/webhooks/{webhook_id}")

    def test_webhook(self, webhook_id: int) -> DeliveryInfo:
        """Send a ping to the webhook now; its delivery says what the receiver answered."""
        return DeliveryInfo.model_validate(self._request("POST", f"/api/v1/webhooks/{webhook_id}/test").json())

    def webhook_deliveries(self, webhook_id: int, *, before: int | None = None, limit: int = 50
                           ) -> list[DeliveryInfo]:
        """The webhook's delivery log, newest first, with every attempt."""
        params = {"limit": limit, **({"before": before} if before is not None else {})}
        return [DeliveryInfo.model_validate(d) for d in
                self._request("GET", f"/api/v1/webhooks/{webhook_id}/deliveries", params=params).json()]


def _segment(name: str) -> str:
    """A name as one URL path segment (a name with '/' or '..' would address another route); '', '.' and '..',
    which a URL drops or climbs from, are no names (refused here: they answered a redirect or another route)."""
    if name in ("", ".", ".."):
        raise InvalidInput(f"{name!r} is not a name: names are 1-64 of a-z, 0-9, '.', '_' and '-', starting with a "
                           "letter or digit.")
    return quote(name, safe="")


def load_adapter(base_model: torch.nn.Module, ref: str | Ref, *, registry: str | None = None,
                 token: str | None = None, is_trainable: bool = False) -> VeraModel:
    """``load_adapter(base, "you/polarity@prod")``: RegistryClient(registry, token).load_adapter(base, ref)."""
    with RegistryClient(registry, token) as client:
        return client.load_adapter(base_model, ref, is_trainable=is_trainable)


def _moved_warning(old: str, new: str) -> None:
    """A read of ``old`` (owner/name) followed the adapter's move to ``new``: said once a read, for the caller to
    update the reference."""
    log.warning("%s moved to %s; update the reference (read from there now)", old, new)
