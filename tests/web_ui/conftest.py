"""The dashboard's tests run it as `vera ui --registry URL` does: the registry a test's pages show (its module's
``registry`` fixture) is the dashboard's default registry, so its links carry no ``?registry=`` (web_ui.navigation;
tests of sessions pointed at another registry set their own)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _dashboard_default_registry(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "registry" in request.fixturenames:
        monkeypatch.setenv("VERA_REGISTRY_URL", request.getfixturevalue("registry")["url"])
