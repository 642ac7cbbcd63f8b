"""Tokens that `vera login` stores, one per registry URL, as `hf auth login` does for the Hub: a JSON file readable
by its owner only (mode 0600) in VERA_CONFIG_DIR (default: $XDG_CONFIG_HOME/vera-registry, else
~/.config/vera-registry). The client uses a stored token when none is given (``--token``, VERA_TOKEN)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FILE_NAME = "credentials.json"


def config_root() -> Path:
    """VERA_CONFIG_DIR, else $XDG_CONFIG_HOME/vera-registry, else ~/.config/vera-registry."""
    explicit = os.environ.get("VERA_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vera-registry"


def credentials_path() -> Path:
    return config_root() / FILE_NAME


def _normalised(url: str) -> str:
    return url.rstrip("/")


def _read() -> dict[str, Any]:
    """The stored credentials; an unreadable or malformed file counts as none (`vera login` rewrites it)."""
    registries = read_private_json(credentials_path(), "registries")
    return {"registries": registries} if registries else {}


def read_private_json(path: Path, key: str) -> dict[str, Any]:
    """The object under ``key`` in the JSON file ``path`` (written by write_private_json); empty when the file is
    missing, unreadable or malformed (its writer rewrites it whole)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found = data.get(key) if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


def stored_token(url: str) -> str | None:
    """The token `vera login` stored for the registry at ``url``, if any."""
    entry = _read().get("registries", {}).get(_normalised(url))
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None


def stored_logins() -> dict[str, str]:
    """Registry URL -> the user each stored token belongs to."""
    return {url: str(entry.get("user", "")) for url, entry in _read().get("registries", {}).items()
            if isinstance(entry, dict)}


def store_token(url: str, token: str, *, user: str) -> Path:
    """Store ``token`` for ``url`` (replacing one stored before); the file is written whole and atomically, readable
    by its owner only."""
    data = _read()
    data.setdefault("registries", {})[_normalised(url)] = {"token": token, "user": user}
    _write(data)
    return credentials_path()


def forget_token(url: str) -> bool:
    """Remove the token stored for ``url``; whether there was one."""
    data = _read()
    if data.get("registries", {}).pop(_normalised(url), None) is None:
        return False
    _write(data)
    return True


def _write(data: dict[str, Any]) -> None:
    write_private_json(credentials_path(), data)


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as the JSON file ``path``, written whole and atomically, readable by its owner only (mode 0600, in a
    folder made 0700): the credentials, and the dashboard's remembered sign-ins (web_ui.remember)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
