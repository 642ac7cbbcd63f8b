"""Logging for every long-running vera process (API, job worker, model server): one line per event on stderr, JSON
when stderr is not a terminal (for log shippers), plain text on one; the request id of the work on every line;
secrets never written.

A request id comes from the caller's ``X-Request-ID`` header (or is made up) and is answered in the same header; it
follows the work: into the access log line, into a fine-tune job the request queued (the worker logs it with the
job), and into the registry requests the model server makes for it. Tokens (``vera_...``), Hub tokens (``hf_...``)
and bearer credentials are replaced by ``[redacted]`` in every message, whoever wrote it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("vera_request_id", default=None)
JOB_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("vera_job_id", default=None)
HEADER = "x-request-id"
#: Where the caller a request was authenticated as is left (Request.state; registry.api.gate and deps set it): the
#: access log names it, an access-denied audit event records it.
PRINCIPAL = "principal"
LEVELS = ("debug", "info", "warning", "error")
_SECRET = re.compile(r"vera_[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{8,}|(?i:bearer)\s+[^\s\"',]+|whsec_[A-Za-z0-9_\-]+")
_VALID_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
#: Fields an event may carry besides its message (``logger.info(..., extra={...})``).
FIELDS = ("request_id", "job_id", "method", "path", "status", "duration_ms", "client", "bytes", "user", "token_id")

log = logging.getLogger("vera")


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's text, at most ``limit`` characters: a database driver's error runs to many lines
    (the statement, its parameters), of which the first says what happened. For SQLAlchemy's wrappers, the driver's
    own error (``orig``)."""
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


#: A URL's password (scheme://user:PASSWORD@host).
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]*):[^/@\s]*@")


def masked_url(url: str) -> str:
    """``url`` with its password written as ***, as SQLAlchemy renders a URL (any URL, one it cannot parse too)."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def new_request_id(offered: str | None = None) -> str:
    """The caller's id if it is a sane one (letters, digits, . _ -; at most 64), else a fresh one."""
    return offered if offered and _VALID_ID.fullmatch(offered) else uuid.uuid4().hex


class _Context(logging.Filter):
    """Adds the current request and job ids, and redacts secrets from the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        record.job_id = getattr(record, "job_id", None) or JOB_ID.get()
        record.msg, record.args = redact(record.getMessage()), None
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        entry.update({key: redact(value) if isinstance(value, str) else value  # a token pasted into a path
                      for key in FIELDS if (value := getattr(record, key, None)) is not None})
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{key}={value}" for key in ("request_id", "job_id")
                           if (value := getattr(record, key, None)) is not None)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        line += f"  [{context}]" if context else ""
        return line + (f"\n{redact(self.formatException(record.exc_info))}" if record.exc_info else "")


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Send vera's and uvicorn's loggers to stderr at ``level``: ``fmt`` json, text, or auto (JSON unless stderr is
    a terminal). uvicorn's own access log is off: the access middleware writes one structured line per request."""
    if level.lower() not in LEVELS or fmt not in ("auto", "json", "text"):
        raise ValueError(f"log level must be one of {', '.join(LEVELS)} and format auto, json or text; "
                         f"got {level!r}, {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if as_json:  # nothing but JSON lines on stderr: no progress bars or plain-text chatter from the HF libraries
        _quiet_hf_libraries()
    handler.setFormatter(JsonLines() if as_json else Text())
    handler.addFilter(_Context())
    for name in ("vera", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True


def _quiet_hf_libraries() -> None:
    """No progress bars from huggingface_hub and transformers, and only their errors (they write plain text)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "huggingface_hub" in sys.modules:  # imported already: its switch was read at import
        from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class AccessLog:
    """Pure ASGI middleware, outermost: gives each request its id (REQUEST_ID, the X-Request-ID response header) and
    writes one access line when it ends: method, path (never the query string), status, duration, client."""

    def __init__(self, app: App, logger: logging.Logger = log) -> None:
        self.app, self.logger = app, logger.getChild("access")

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next((v.decode("latin-1") for k, v in scope["headers"] if k == HEADER.encode()), None)
        request_id = new_request_id(offered)
        token = REQUEST_ID.set(request_id)
        start, status, sent = time.perf_counter(), 500, 0

        async def sending(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER.encode(), request_id.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            # the caller a token named (registry.api.deps keeps it in the request's state): who did it, in the log
            caller = (scope.get("state") or {}).get(PRINCIPAL)
            self.logger.info(f"{scope['method']} {scope['path']} {status}", extra={
                "method": scope["method"], "path": scope["path"], "status": status, "bytes": sent,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                "client": client[0] if client else None, "user": getattr(caller, "owner", None),
                "token_id": getattr(caller, "token_id", None)})
            REQUEST_ID.reset(token)
