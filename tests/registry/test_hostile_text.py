"""Text that is not what it claims, through a real server: a lone UTF-16 surrogate (JSON's "\\ud800" decodes to one),
C1 control characters, line separators and bidirectional overrides in one-line fields, and crafted listing cursors.
Each is a 422 that says what is wrong and stores nothing; the listing and the audit log stay readable for everyone
(a surrogate once stored made both a 500 for every caller: an outsider's walk, session 29)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from registry.client import RegistryClient
from registry.domain.errors import InvalidInput
from tests.registry.adapters import make_adapter
from tests.registry.servers import registry_in_thread

SURROGATE = "\ud800"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("hostile-text")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as url:
        source = make_adapter(root / "adapter")
        with RegistryClient(url, cache=False) as client:
            client.publish(source, "ann/clf", base_model="tiny-llama", properties={"validation": "passed"})
        yield {"url": url, "source": source, "database": f"sqlite:///{root / 'r.db'}"}


def raw(server: dict[str, Any], method: str, path: str, body: str) -> httpx.Response:
    """``body`` sent as it is: JSON text whose escapes the server decodes (httpx would refuse a lone surrogate)."""
    return httpx.request(method, f"{server['url']}{path}", content=body.encode(),
                         headers={"Content-Type": "application/json"})


VERSION = "/api/v1/adapters/ann/clf/versions/1"


@pytest.mark.parametrize(("method", "path", "body", "message"), [
    ("POST", f"{VERSION}/evaluations", '{"name": "ev", "metrics": {"a": 1, "note": "\\udc00"}}',
     r"metrics holds '\\udc00', half of a UTF-16 surrogate pair"),
    ("PATCH", VERSION, '{"properties": {"set": {"k": "x\\ud800"}}}', r"property 'k' holds '\\ud800'"),
    ("PATCH", VERSION, '{"description": "\\ud800"}', r"holds '\\ud800'"),
    ("PATCH", "/api/v1/adapters/ann/clf", '{"card": "# Card\\n\\udfff"}', r"holds '\\udfff'"),
    ("PATCH", "/api/v1/adapters/ann/clf", '{"description": "\\ud800"}', r"holds '\\ud800'"),
    # one line of plain text: no C1 control (\x9b is a terminal's CSI), line separator or bidi override
    ("PATCH", VERSION, '{"properties": {"set": {"k": "a\\u009b31mred"}}}', r"the control character '\\x9b'"),
    ("PATCH", VERSION, '{"properties": {"set": {"k": "abc\\u202edef"}}}', r"'\\u202e', a line separator or a bidi"),
    ("PATCH", VERSION, '{"properties": {"set": {"k": "one\\u2028two"}}}', r"'\\u2028', a line separator"),
    ("PATCH", VERSION, '{"properties": {"set": {"k": "a\\u0085b"}}}', r"the control character '\\x85'"),
    ("PATCH", "/api/v1/adapters/ann/clf", '{"card": "# Card\\n\\u009b2J"}', r"the control character '\\x9b'"),
], ids=["evaluation", "property", "version-description", "card", "adapter-description", "c1-csi", "bidi-override",
        "line-separator", "next-line", "c1-in-card"])
def test_text_that_is_not_plain_unicode_is_refused_and_changes_nothing(server: dict[str, Any], method: str, path: str,
                                                                       body: str, message: str) -> None:
    before = httpx.get(f"{server['url']}{VERSION}").json()
    answer = raw(server, method, path, body)
    assert answer.status_code == 422, answer.text
    assert re.search(message, answer.json()["detail"]), answer.json()["detail"]
    assert httpx.get(f"{server['url']}{VERSION}").json() == before
    assert httpx.get(f"{server['url']}{VERSION}/evaluations").json() == []
    for path_ in ("/api/v1/adapters", "/api/v1/events", "/api/v1/adapters/ann/clf"):
        assert httpx.get(f"{server['url']}{path_}").status_code == 200, path_


def test_a_publish_with_a_surrogate_in_its_metrics_or_properties_stores_nothing(server: dict[str, Any]) -> None:
    with RegistryClient(server["url"], cache=False) as client:
        for fields in ({"metrics": {"accuracy": 0.5, "note": SURROGATE}}, {"properties": {"k": SURROGATE}}):
            with pytest.raises(InvalidInput, match="half of a UTF-16 surrogate pair"):
                client.publish(server["source"], "ann/clf", base_model="tiny-llama", **fields)
        assert [v.version for v in client.list_versions(owner="ann").items] == [1]  # no number used up
        assert client.events().events  # the audit log reads


def test_right_to_left_text_stays_where_several_lines_are_allowed(server: dict[str, Any]) -> None:
    """A card may hold right-to-left text with its isolates (a Hebrew or Arabic model card), and the C1 characters
    that pasted text holds (only those that start a terminal's control sequence are refused there): one-line fields
    refuse both."""
    card = "# מודל\n\u2067نموذج\u2069 for reviews; \x93pasted\x94 from Windows-1252"  # C1 other than CSI & co
    with RegistryClient(server["url"], cache=False) as client:
        assert client.update_adapter("ann/clf", card=card).card == card
        assert client.update_version("ann/clf:1", set_properties={"language": "עברית"}).properties["language"] == \
            "עברית"


def cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("sort", "crafted"), [
    ("-created", cursor("v2", "-created", 2**70, 5)),
    ("-created", cursor("v2", "-created", None, 5)),
    ("-created", cursor("v2", "-created", True, 5)),
    ("-created", cursor("v2", "-created", 5, 2**70)),
    ("-created", cursor("v2", "-created", 5, -1)),
    ("r", cursor("v2", "r", "eight", 1)),
    ("verification_status", cursor("v2", "verification_status", 3, 1)),
    ("-metrics.accuracy", cursor("v2", "-metrics.accuracy", 10**309, 1)),
    ("-metrics.accuracy", cursor("v2", "-metrics.accuracy", None, 1)),
], ids=["huge-value", "null", "bool", "huge-id", "negative-id", "text-for-rank", "number-for-text", "huge-metric",
        "null-metric"])
def test_a_crafted_cursor_is_a_422(server: dict[str, Any], sort: str, crafted: str) -> None:
    answer = httpx.get(f"{server['url']}/api/v1/adapters", params={"sort": sort, "cursor": crafted})
    assert answer.status_code == 422, answer.text
    assert "is not one this registry issued" in answer.json()["detail"]


def test_a_run_of_surrogates_is_refused_naming_one_not_echoing_the_run() -> None:
    """The encoder reports consecutive surrogates as one error: the refusal names the first, and stays short however
    long the run (it echoed 900 KB of a request back: a reviewer's find, session 30)."""
    from registry.domain.schemas import json_object

    with pytest.raises(InvalidInput) as refused:
        json_object('{"a": "' + "\\udc80" * 150_000 + '"}', "metrics")
    assert str(refused.value) == ("metrics holds '\\udc80', half of a UTF-16 surrogate pair, which is not text; send "
                                  "valid Unicode.")


def test_only_an_encoding_error_of_a_surrogate_is_the_callers() -> None:
    """The last line of defence: a surrogate that reaches a database driver unchecked is a 422 (nothing was stored);
    any other encoding error is the server's own bug, a 500 that says nothing of the text."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from registry.api.problems import install_problem_handlers

    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/surrogate")
    def surrogate() -> None:
        ("text " + SURROGATE).encode()

    @app.get("/latin")
    def latin() -> None:
        "€".encode("latin-1")

    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.get("/surrogate")
        assert refused.status_code == 422 and "'\\ud800'); send valid Unicode" in refused.json()["detail"]
        failed = client.get("/latin")
        assert failed.status_code == 500 and failed.json()["detail"] == "Unexpected UnicodeEncodeError; see the " \
            "server log."


def test_an_adapter_config_with_a_surrogate_is_refused(server: dict[str, Any]) -> None:
    """adapter_config.json is JSON too: a "\\ud800" in it is refused at publish, not stored into every listing."""
    config = json.loads((server["source"] / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "tiny\\ud800"  # written as the escape, as a crafted file would
    text = json.dumps(config).replace("\\\\ud800", "\\ud800")
    answer = httpx.post(f"{server['url']}/api/v1/adapters/ann/clf/versions", data={"base_model": "tiny-llama"},
                        files={"adapter_config": ("adapter_config.json", text.encode()),
                               "adapter_model": ("adapter_model.safetensors",
                                                 (server["source"] / "adapter_model.safetensors").read_bytes())})
    assert answer.status_code == 422, answer.text
    assert "half of a UTF-16 surrogate pair" in answer.json()["detail"]
    assert [v["version"] for v in httpx.get(f"{server['url']}/api/v1/adapters").json()["items"]] == [1]


def test_the_cli_shows_control_characters_of_rows_stored_before_they_were_refused(server: dict[str, Any]) -> None:
    """The registry refuses escape sequences as it stores text, but rows stored before it did (a Hub commit id, a
    description) still hold them: every `vera` table and line shows them as escapes, never runs them (session 39)."""
    from sqlalchemy import text

    from registry.store.database import Database
    from tests.commands import wide_vera as vera

    with RegistryClient(server["url"], cache=False) as client:
        client.publish(server["source"], "ann/old-rows", base_model="tiny-llama")
    db = Database(server["database"])
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE adapter_versions SET description = :d WHERE id = (SELECT max(id) FROM "
                          "adapter_versions)"), {"d": "fine\x1b]0;pwned\x07\x1b[2Jforged\u202eline"})
    db.close()
    shown = vera("show", "ann/old-rows:1", "--registry", server["url"])
    listed = vera("ls", "--registry", server["url"], "--owner", "ann")
    assert shown.returncode == 0 and listed.returncode == 0, shown.stderr + listed.stderr
    assert "fine\\x1b]0;pwned\\x1b[2Jforged\\u202eline" in shown.stdout
    as_json = vera("show", "ann/old-rows:1", "--json", "--registry", server["url"])
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["description"] == "fine\x1b]0;pwned\x07\x1b[2Jforged\u202eline"  # the text
    assert '\\u001b]0;pwned\\u0007\\u001b[2Jforged\\u202eline' in as_json.stdout  # written as escapes
    for output in (shown.stdout + shown.stderr, listed.stdout + listed.stderr, as_json.stdout):
        assert "\x1b" not in output and "\u202e" not in output and "\x07" not in output
