"""The dashboard's connection to the registry: URL and token per browser session, one typed client per call, reads
cached for a few seconds (and started ahead, side by side, where a page knows what it will read), and clear messages
(never a traceback) when the URL lacks its scheme, points at something that is not a vera registry, cannot be
reached or refuses the token."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

import httpx
import streamlit as st

from registry.client import DEFAULT_URL, RegistryClient, RegistryUnavailable
from registry.domain.errors import Forbidden, InvalidInput, NotFound, RegistryError, Unauthorized
from web_ui import remember

T = TypeVar("T")
P = ParamSpec("P")


def default_url() -> str:
    """The registry a new session shows: VERA_REGISTRY_URL, else the local default."""
    return (os.environ.get("VERA_REGISTRY_URL") or DEFAULT_URL).rstrip("/")


def settings() -> tuple[str, str]:
    """(registry URL, token) of this browser session. A new session takes the registry its address names
    (``?registry=``, written by links of a session pointed at another registry: web_ui.navigation), else
    default_url(); its token is VERA_TOKEN only for the default registry: a link naming another registry must not
    make the dashboard send that token elsewhere (paste one in the sidebar). A sign-in this browser remembers for
    that registry (web_ui.remember) comes before VERA_TOKEN."""
    state = st.session_state
    if "registry_url" not in state:
        state["registry_url"] = (st.query_params.get("registry") or default_url()).rstrip("/")
    if "token" not in state:  # this browser's remembered sign-in for the registry (web_ui.remember), else VERA_TOKEN
        state["token"] = remember.adopt(state["registry_url"]) or remember.default_token(state["registry_url"])
    return state["registry_url"], state["token"]


def allowed_registries() -> frozenset[str] | None:
    """The registries this dashboard may talk to: VERA_UI_REGISTRIES (comma-separated URLs; empty: none but the
    default) and the default one, or None (unset): any, as a dashboard on one's own machine may. A dashboard that
    others reach sets it, so that neither a link's ``?registry=`` nor the sidebar makes the dashboard's server send
    requests wherever a visitor names (into the operator's network)."""
    listed = os.environ.get("VERA_UI_REGISTRIES")
    if listed is None:
        return None
    return frozenset({default_url(), *(url.strip().rstrip("/") for url in listed.split(",") if url.strip())})


def connect(url: str, token: str, *, timeout: float = 60, retries: int = 3) -> RegistryClient:
    """A client for the registry at ``url``; InvalidInput, sending nothing, for one this dashboard may not reach."""
    if (problem := url_problem(url)) is not None:
        raise InvalidInput(problem)
    return RegistryClient(url, token, timeout=timeout, retries=retries)


def client() -> RegistryClient:
    url, token = settings()
    return connect(url, token)


def call(fn: Callable[[RegistryClient], T]) -> T:
    """Run ``fn`` with a fresh client (closed afterwards)."""
    with client() as c:
        return fn(c)


@st.cache_data(ttl=5, show_spinner=False)
def _cached(url: str, token: str, name: str, _fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """A read through the client, cached for a few seconds per (registry, token, function ``name``, arguments);
    Streamlit does not hash ``_fn`` (its leading underscore), ``name`` stands for it."""
    with connect(url, token) as c:
        return _fn(c, *args, **kwargs)


def _name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def read(fn: Callable[Concatenate[RegistryClient, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(client, *args, **kwargs)``, cached: ``read(RegistryClient.get, ref)`` is a VersionInfo."""
    url, token = settings()
    return cast(T, _cached(url, token, _name(fn), fn, *args, **kwargs))


@st.cache_data(ttl=3600, max_entries=200, show_spinner=False)
def _kept(url: str, token: str, name: str, _fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """As _cached, kept an hour: for reads whose arguments pin content that does not change."""
    with connect(url, token) as c:
        return _fn(c, *args, **kwargs)


def read_pinned(fn: Callable[Concatenate[RegistryClient, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``read`` kept an hour instead of a few seconds, for what the arguments pin: versions named owner/name:N
    together with the digests of what the result is computed from (their vectors' SHA-256, their projection's
    fingerprint), e.g. the per-layer comparison of versions, which only changes when they do. The caller reads
    the versions (``read``, with its token) first, so a version it may not see is refused before this runs."""
    url, token = settings()
    return cast(T, _kept(url, token, _name(fn), fn, *args, **kwargs))


#: Threads for reads started ahead (shared by every session; a read waits for the registry, not for a core).
_AHEAD = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vera-read-ahead")


def prefetch(fn: Callable[Concatenate[RegistryClient, P], Any], *args: P.args, **kwargs: P.kwargs) -> None:
    """Start ``read(fn, *args, **kwargs)`` on another thread and return at once, so that reads a page knows it will
    make run side by side instead of one after another. The page's own ``read`` with the same arguments then takes
    the value: Streamlit's cache lets one caller compute a key while the others wait for it. A failed read is not
    cached, so the page's ``read`` tries again and shows the error as usual."""
    url, token = settings()
    _AHEAD.submit(_cached, url, token, _name(fn), fn, *args, **kwargs)


def start(fn: Callable[[RegistryClient], T]) -> Future[T]:
    """``call(fn)`` started on the read-ahead threads, uncached (for reads a run must see fresh, such as a jobs
    listing whose statuses change by the second): its result is the future's. The client is made here, on the
    page's thread, which alone knows the session's settings."""
    def closing(c: RegistryClient) -> T:
        with c:
            return fn(c)

    return _AHEAD.submit(closing, client())


def prefetch_pinned(fn: Callable[Concatenate[RegistryClient, P], Any], *args: P.args, **kwargs: P.kwargs) -> None:
    """``prefetch`` for ``read_pinned``."""
    url, token = settings()
    _AHEAD.submit(_kept, url, token, _name(fn), fn, *args, **kwargs)


def dashboard_words(message: str) -> str:
    """A registry message whose way on is a command (`vera ls --owner alice`) with the dashboard's way instead (a
    new user's walk, session 23: the dashboard told them to run commands)."""
    message = _LS_OWNER.sub(r"Browse (Filter and sort, Owner: \1) lists that owner's adapters.", message)
    message = _SET_ALIAS.sub(r"An alias is set on its version's Adapter page (**Point alias here**).", message)
    return _ORG_ADMINS.sub(r"(the Organisations page lists them, under \1), or have them unprotect it there.", message)


_LS_OWNER = re.compile(r"`vera ls --owner ([^`\s]{1,100})` lists that owner's\.")
_SET_ALIAS = re.compile(r"An alias is set with `vera alias [^`\s]{1,300} [^`\s]{1,100}`\.")
#: a protected alias's refusal (registry.services.moves.refuse_protected): who to ask, and how they unprotect it
_ORG_ADMINS = re.compile(r"\(`vera org show ([^`\s]{1,100})` lists them\), or have them unprotect it "
                         r"\(`vera org unprotect [^`]{1,200}`\)\.")


def unreachable(url: str) -> str:
    """What the page says of a registry it cannot reach: in the dashboard's words (the sidebar, not the client's
    VERA_REGISTRY_URL, which a dashboard user cannot set: a newcomer's walk, session 54)."""
    return (f"The registry at {url} cannot be reached. Start one with `vera up` (or `vera serve`), or set its URL in "
            "the sidebar.")


def show_error(exc: RegistryError, words: Callable[[str], str] = dashboard_words) -> None:
    """``exc`` as the page says it; ``words``: the registry's message in the page's words (its ways on)."""
    url, token = settings()
    if isinstance(exc, RegistryUnavailable):
        st.error(unreachable(url), icon=":material/cloud_off:")
    elif isinstance(exc, Unauthorized):
        st.error(("The registry refused the token. " if token else "This registry requires a token. ")
                 + "Paste a valid one in the sidebar's Token box (`vera auth create-token` makes one from a token "
                   "you have; an administrator gives you your first)."
                 + ("" if token else " A link opened in a new tab starts without the token pasted in another: once "
                                     "it is pasted, **Remember me on this browser** under the Token box keeps it "
                                     "across tabs."),
                 icon=":material/key_off:")
    elif isinstance(exc, Forbidden):
        # the registry's message says why (a role, a token's scope or owners, a protected alias, a quota): "The token
        # may not do this" read as a bad token where the role was the reason (session 28's walk)
        st.error(f"Not allowed: {words(str(exc))}", icon=":material/block:")
    elif isinstance(exc, NotFound):
        st.warning(words(str(exc)), icon=":material/search_off:")
    else:
        st.error(words(str(exc)), icon=":material/error:")


def url_problem(url: str) -> str | None:
    """What is wrong with a registry URL before any request is sent (a missing http://, a registry this dashboard
    may not reach: allowed_registries), or None."""
    if not url.startswith(("http://", "https://")):
        return (f"The registry URL {url!r} does not start with http:// or https://. Add it in the sidebar, e.g. "
                f"http://{url.removeprefix('//') or '127.0.0.1:8765'}")
    if len(url) > 2000 or any(not c.isprintable() or c.isspace() for c in url):
        return (f"The registry URL {url[:200]!r} holds a space or a control character (or is over 2,000 "
                "characters); type the registry's address, e.g. http://127.0.0.1:8765")
    allowed = allowed_registries()
    if allowed is None or url in allowed:
        return None
    return (f"This dashboard talks only to {', '.join(sorted(allowed))} (VERA_UI_REGISTRIES, set by whoever runs it), "
            f"not to {url[:200]}. Set one of those in the sidebar, or run your own dashboard for another registry: "
            "`vera ui --registry URL`.")


#: The largest answer to GET /health read to tell what the server is (the registry's is 16 bytes).
HEALTH_BYTES = 64 << 10
#: The first part of a path on the registry's own server (its API, docs and probes): a URL ending in one of them
#: names a page of the registry, not the registry, whose URL is its root (http://127.0.0.1:8765, not .../api/v1).
REGISTRY_PATHS = ("api", "docs", "redoc", "openapi.json", "health", "ready", "metrics")


def registry_problem(url: str, token: str) -> str | None:
    """Why the server at ``url`` is not a vera registry (its ``/health`` does not answer ``{"status": "ok"}``), as
    one message: what the server answered, in a few words, and what to set instead (the URL's root when it ends in
    one of the registry's own paths, such as /api/v1); None when it answers like one or cannot be reached at all
    (show_error says that)."""
    found = health_answer(url, token)
    if found is None:
        return None
    problem = (f"{url} answered, but it is not a vera registry: GET /health there gave {found}, where a registry "
               'answers {"status": "ok"}.')
    if (root := registry_root(url)) is not None:
        return (f"{problem} The registry's URL is its root, without {url.removeprefix(root)}: set {root} in the "
                "sidebar (the dashboard adds /api/v1 and the rest itself).")
    return (f"{problem} Is it the dashboard's own address or another service? Set the registry's API URL in the "
            f"sidebar: `vera up` prints it (this dashboard's default: {default_url()}).")


def health_answer(url: str, token: str) -> str | None:
    """What GET ``url``/health answered, in a few words of the dashboard's ("HTTP 404 Not Found", "an HTML page,
    not the registry's answer"), never quoted; None when it answered ``{"status": "ok"}`` or nothing answered."""
    try:
        with connect(url, token, timeout=10, retries=0) as c, c.http.stream("GET", f"{url}/health") as response:
            body = b""
            for piece in response.iter_bytes():
                body += piece
                if len(body) > HEALTH_BYTES:
                    break
    except httpx.TransportError:
        return None
    html = response.headers.get("content-type", "").startswith("text/html") or body.lstrip().startswith(b"<")
    status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    if response.status_code >= 300:  # an error, or a redirect elsewhere (the registry's /health has none)
        return f"{status} (an HTML page, not the registry's answer)" if html else status
    if html:
        return "an HTML page, not the registry's answer"
    try:
        answer = json.loads(body)
    except ValueError:  # (UnicodeDecodeError too)
        return "an answer that is not JSON"
    return None if answer == {"status": "ok"} else 'JSON without "status": "ok"'


def registry_root(url: str) -> str | None:
    """The URL's root (scheme://host:port) when its path starts with one of the registry's own paths
    (REGISTRY_PATHS: http://127.0.0.1:8000/api/v1 -> http://127.0.0.1:8000), else None."""
    parts = urlsplit(url)
    first = parts.path.strip("/").split("/")[0]
    return f"{parts.scheme}://{parts.netloc}" if first in REGISTRY_PATHS else None


def guarded(page: Callable[[], None], title: str | None = None) -> Callable[[], None]:
    """A page that shows a bad URL, a server that is not a registry and registry errors as messages instead of
    tracebacks; ``title``: the page's heading, drawn above a bad URL's message, which the page is not run for (the
    page then had no heading: a walk's finding)."""

    @functools.wraps(page)
    def run() -> None:
        url, token = settings()
        if (problem := url_problem(url)) is not None:
            if title is not None:
                st.title(title)
            st.error(problem, icon=":material/link_off:")
            return
        try:
            page()
        except Exception as exc:
            if (problem := registry_problem(url, token)) is not None:  # asked only after something failed
                st.error(problem, icon=":material/link_off:")
            elif isinstance(exc, RegistryError):
                show_error(exc)
            else:
                raise

    return run
