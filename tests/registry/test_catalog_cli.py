"""The catalog commands as a user runs them (`vera` against a real server, tests.commands): show,
tag, describe, card, yank, delete, lineage; --json on every listing; `vera ls` readable in 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.client import RegistryClient
from registry.domain.errors import NotFound
from tests.commands import VERA_COMMAND
from tests.commands import vera as run_vera
from tests.registry.adapters import make_adapter
from tests.registry.servers import free_port, registry_in_thread


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("catalog")
    with registry_in_thread(f"sqlite:///{root / 'r.db'}", root / "blobs") as base:
        yield {"url": base, "source": make_adapter(root / "adapter"), "root": root}


def vera(server: dict[str, Any], *args: str, columns: int = 200, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "VERA_REGISTRY_URL": server["url"], "VERA_NO_CACHE": "1"}
    env.pop("VERA_TOKEN", None)
    return run_vera(args, env=env, input=stdin)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _publish(server: dict[str, Any], name: str, *args: str) -> str:
    out = ok(vera(server, "publish", str(server["source"]), "--name", name, "--base-model", "tiny-llama", *args))
    return out.split()[1]  # "published owner/name:N (...)"


def test_show_tells_everything_readably_and_as_json(server: dict[str, Any]) -> None:
    parent = _publish(server, "ann/show-base")
    ref = _publish(server, "ann/show", "--tag", "demo", "--description", "a test version", "--parent", parent,
                   "--code-revision", "git 0123abc")
    text = ok(vera(server, "show", ref))
    for expected in (ref, "latest", "a test version", "tiny-llama", "r=8", "demo", f"fine-tuned from {parent}",
                     "code git 0123abc", "no model card", "published"):
        assert expected in text, (expected, text)
    data = json.loads(ok(vera(server, "show", ref, "--json")))
    assert data["ref"] == ref and data["lineage"] == {"parent": parent, "code_revision": "git 0123abc"}


def test_resolve_pins_references_to_versions_and_names_the_missing(server: dict[str, Any]) -> None:
    """`vera resolve`: a "REF<TAB>owner/name:N" line per reference (an alias, latest, a number), one request for all;
    a reference naming nothing is '-' in its line and named on stderr, exit 3 (a check that found a problem; 1: the
    registry could not answer); --json as the API answers."""
    first = _publish(server, "ann/pin")
    second = _publish(server, "ann/pin")
    ok(vera(server, "alias", first, "prod"))
    out = ok(vera(server, "resolve", "ann/pin@prod", "ann/pin", second))
    assert out.splitlines() == [f"ann/pin@prod\t{first}", f"ann/pin\t{second}", f"{second}\t{second}"]
    missing = vera(server, "resolve", "ann/pin@prod", "ann/pin@staging", "ann/nope:1")
    assert missing.returncode == 3
    assert missing.stdout.splitlines() == [f"ann/pin@prod\t{first}", "ann/pin@staging\t-", "ann/nope:1\t-"]
    assert "No version you may read for ann/pin@staging, ann/nope:1 (2 distinct references of 3)" in missing.stderr
    # and why each (it said the same "lists an adapter's versions" for every miss): asked for alone, up to three
    said = " ".join(missing.stderr.split())
    assert "ann/pin has no alias 'staging'; its aliases: latest, prod." in said and "No adapter ann/nope;" in said, said
    assert "`vera show OWNER/NAME` its aliases" not in said
    many = vera(server, "resolve", "ann/pin:9", "ann/pin:8", "ann/pin@x", "ann/pin@y")
    said = " ".join(many.stderr.split())
    assert many.returncode == 3 and "ann/pin has no version 9; " in said and "has no alias 'x'" in said
    assert "has no alias 'y'" not in said and "`vera ls OWNER/NAME` lists an adapter's versions" in said, said
    data = json.loads(vera(server, "resolve", "ann/pin@prod", "ann/nope:1", "--json").stdout)
    assert [(r["requested"], r["version"] and r["version"]["ref"]) for r in data["results"]] == [
        ("ann/pin@prod", first), ("ann/nope:1", None)]
    twice = ok(vera(server, "resolve", "ann/pin", "ann/pin@prod", "ann/pin"))  # a line per argument, in order
    assert twice.splitlines() == [f"ann/pin\t{second}", f"ann/pin@prod\t{first}", f"ann/pin\t{second}"]
    bad = vera(server, "resolve", "ann/pin@prod", "Ann/Pin")  # checked before anything is sent, by its place
    assert bad.returncode == 1 and "REF 2 of 2: 'Ann/Pin'" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stdout == ""
    unreachable = vera({**server, "url": f"http://127.0.0.1:{free_port()}"}, "resolve", "ann/pin@prod")
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("error: ") and unreachable.stdout == ""


def test_tag_describe_and_card_change_metadata(server: dict[str, Any], tmp_path: Path) -> None:
    ref = _publish(server, "ann/meta", "--tag", "old")
    assert "tags: new, old, other" in ok(vera(server, "tag", ref, "new", "other"))
    assert "tags: new, other" in ok(vera(server, "tag", ref, "old", "--remove"))
    ok(vera(server, "describe", ref, "the version's words"))
    (tmp_path / "about.txt").write_text("the adapter's words\r\nover two lines\n")
    ok(vera(server, "describe", "ann/meta", "--file", str(tmp_path / "about.txt")))
    (tmp_path / "README.md").write_text("# Meta\n\nA card.\n", encoding="utf-8")
    assert "model card set (16 bytes)" in ok(vera(server, "card", "ann/meta", "--file", str(tmp_path / "README.md")))
    assert ok(vera(server, "card", "ann/meta")) == "# Meta\n\nA card.\n"
    ok(vera(server, "card", "ann/meta", "--file", "-", stdin="# From stdin\n"))
    with RegistryClient(server["url"], cache=False) as client:
        adapter, version = client.adapter("ann/meta"), client.get(ref)
    assert (adapter.description, adapter.card) == ("the adapter's words\nover two lines\n", "# From stdin\n")
    assert (version.description, version.tags) == ("the version's words", ["new", "other"])


def test_a_card_prints_as_written_into_a_file_and_escaped_on_a_terminal(server: dict[str, Any]) -> None:
    """A card's bidirectional overrides and C1 controls (which a card may hold: free text) reached the terminal as
    themselves (an outsider's finding, session 54: U+008D moves the cursor up a line). On a terminal they are
    escapes, as in every other line `vera` prints; into a pipe or a file the card is exact, to be edited and set
    again."""
    import pty
    import select

    card = "# Card\nline \u202eRLO\u202c and \u008d\u008dup, \u0085nel\tand a tab\n"
    with RegistryClient(server["url"], cache=False) as client:
        client.publish(server["source"], "ann/carded", base_model="tiny-llama")
        client.update_adapter("ann/carded", card=card)
    assert ok(vera(server, "card", "ann/carded")) == card  # a pipe: as written
    primary, secondary = pty.openpty()
    env = {**os.environ, "VERA_REGISTRY_URL": server["url"], "VERA_NO_CACHE": "1", "VERA_TOKEN": ""}
    with subprocess.Popen([*VERA_COMMAND, "card", "ann/carded"], stdout=secondary, stderr=subprocess.PIPE,
                          env=env) as process:
        os.close(secondary)
        said = b""
        while select.select([primary], [], [], 60)[0]:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal's other end closed: the command ended
                break
            if not chunk:
                break
            said += chunk
        assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
    os.close(primary)
    assert said.decode().replace("\r\n", "\n") == \
        "# Card\nline \\u202eRLO\\u202c and \\x8d\\x8dup, \\x85nel\tand a tab\n", said


@pytest.mark.parametrize(("args", "message"), [
    (("tag", "ann/meta:1", "Bad Tag"), "Tag 'Bad Tag' is not a valid name"),
    (("describe", "ann/meta"), "either as an argument or with --file"),
    (("describe", "ann/meta", "x", "--file", "f"), "either as an argument or with --file"),
    (("card", "ann/meta", "--file", "/nonexistent/README.md"), "not a readable UTF-8 text file"),
    (("card", "ann/meta:1"), "names a version; name the adapter, ann/meta"),
    (("delete", "ann/meta", "--yes"), "names no version; say which to delete: ann/meta:VERSION"),
    (("show", "ann/nothing:1"), "No adapter ann/nothing"),
    (("alias", "ann/meta:1", "Prod"), "Alias 'Prod' is not a valid name: use 1-64 lowercase letters, digits, '.', "
                                      "'_' or '-', starting with a letter or digit (no '/', spaces, control "
                                      "characters or '..'). Did you mean 'prod'?"),
], ids=["bad-tag", "no-text", "two-texts", "missing-file", "card-of-version", "bare-delete", "missing",
        "capital-alias"])
def test_bad_catalog_commands_say_what_to_do(server: dict[str, Any], args: tuple[str, ...], message: str) -> None:
    if not server.get("meta"):
        server["meta"] = _publish(server, "ann/meta")
    result = vera(server, *args)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_an_alias_set_through_another_says_which_version_and_that_it_stays(server: dict[str, Any]) -> None:
    """A PEFT user's walk (session 47): `vera alias me/sent@prod staging` said "(me/sent@prod names @prod; me/sent:N
    names one)"."""
    first = _publish(server, "ann/pinned")
    ok(vera(server, "alias", first, "prod"))
    _publish(server, "ann/pinned")
    assert "ann/pinned@staging -> 1 (the version @prod names now; @staging stays on 1 when @prod moves)" in " ".join(
        ok(vera(server, "alias", "ann/pinned@prod", "staging")).split())
    assert "ann/pinned@canary -> 2 (the latest version now; @canary stays on 2 when a new version is " \
        "published)" in " ".join(ok(vera(server, "alias", "ann/pinned", "canary")).split())
    assert "(" not in ok(vera(server, "alias", "ann/pinned:2", "beta"))  # a number says itself


def test_yank_undo_and_delete_with_confirmation(server: dict[str, Any]) -> None:
    ref = _publish(server, "ann/gone")
    assert f"{ref} yanked" in ok(vera(server, "yank", ref))
    assert ok(vera(server, "ls", "--owner", "ann", "--json")).count(f'"{ref}"') == 0  # hidden from listings
    assert f"{ref} no longer yanked" in ok(vera(server, "yank", ref, "--undo"))
    ok(vera(server, "alias", ref, "prod"))
    yanked = " ".join(ok(vera(server, "yank", ref)).split())  # a yank moves latest only: it says so of prod
    assert "ann/gone@prod still points at it: a yank moves only latest. Move it with `vera alias ann/gone:N prod`" \
        in yanked
    onto_yanked = vera(server, "alias", ref, "canary")  # an alias may name a yanked version, with a note
    assert onto_yanked.returncode == 0 and f"note: {ref} is yanked: whoever fetches ann/gone@canary" in \
        " ".join(onto_yanked.stderr.split())
    # fetched through the alias left on it: fetched, with a warning (it came unsaid: a newcomer's walk, session 40)
    fetched = vera(server, "fetch", "ann/gone@prod", "-o", str(server["root"] / "yanked-fetch"))
    assert fetched.returncode == 0 and f"fetched {ref}" in fetched.stdout
    assert (f"warning: {ref} is yanked: its publisher took it out of listings and latest. ann/gone@prod still names "
            "it; move the alias if that is not meant.") in " ".join(fetched.stderr.split())
    listed = ok(vera(server, "ls", "ann/gone", "--include-yanked"))
    assert f"{ref} (yanked)" in listed and "prod" in listed
    assert "no versions match" in ok(vera(server, "ls", "ann/gone"))  # hidden from listings by default
    _publish(server, "ann/other")
    other = ok(vera(server, "ls", "ann/other", "--include-yanked"))
    assert "ann/other:1" in other and "ann/gone:" not in other  # the name is a filter
    assert vera(server, "ls", "ann/gone:1").returncode == 1  # a version lists nothing: refused, saying so
    clash = vera(server, "ls", "ann/gone", "--owner", "bob")
    assert clash.returncode == 1 and "'ann/gone' and --owner bob name two owners" in clash.stderr
    # with a reason (PEP 592's, as pip says a yanked release's): said by yank, show and fetch; --undo clears it
    reason = "trained on a leaked test split: use ann/gone:2"
    assert f"{ref} yanked: {reason}" in " ".join(ok(vera(server, "yank", ref, "--reason", reason)).split())
    assert f"YANKED (hidden from listings and latest; fetchable by number): {reason}" in " ".join(
        ok(vera(server, "show", ref)).split())
    warned = vera(server, "fetch", ref, "-o", str(server["root"] / "yanked-reason"))
    assert warned.returncode == 0 and f"warning: {ref} is yanked ({reason}): its publisher took it out" in " ".join(
        warned.stderr.split())
    both = vera(server, "yank", ref, "--undo", "--reason", "x")
    assert both.returncode == 1 and "--reason goes with a yank" in both.stderr
    long = vera(server, "yank", ref, "--reason", "x" * 501)
    assert long.returncode == 1 and "The yank reason must be text of at most 500 characters" in long.stderr
    with RegistryClient(server["url"]) as client:
        assert client.get(ref).yank_reason == reason  # the refusals changed nothing
    ok(vera(server, "yank", ref, "--undo"))
    with RegistryClient(server["url"]) as client:
        assert client.get(ref).yank_reason is None
    refused = vera(server, "delete", ref, stdin="n\n")
    assert refused.returncode == 1 and "was not deleted; pass --yes" in refused.stderr
    unanswered = vera(server, "delete", ref)  # stdin closed: no answer is no
    assert unanswered.returncode == 1 and "was not deleted" in unanswered.stderr
    assert ok(vera(server, "show", ref, "--json"))  # still there
    assert f"deleted {ref}" in ok(vera(server, "delete", ref, stdin="y\n"))
    assert vera(server, "show", ref).returncode == 1
    again = _publish(server, "ann/gone")
    assert again == "ann/gone:2"  # the deleted version's number is not given again
    assert f"deleted {again}" in ok(vera(server, "delete", again, "--yes"))


def test_a_whole_adapter_is_deleted_with_all_after_asking(server: dict[str, Any]) -> None:
    refs = [_publish(server, "ann/whole") for _ in range(3)]
    ok(vera(server, "alias", refs[0], "prod"))
    named = vera(server, "delete", "ann/whole")
    assert named.returncode == 1 and "or every version: vera delete ann/whole --all" in " ".join(named.stderr.split())
    refused = vera(server, "delete", "ann/whole", "--all", stdin="n\n")
    assert refused.returncode == 1 and "Delete ann/whole and all its 3 versions?" in refused.stdout
    assert "ann/whole was not deleted" in refused.stderr
    assert "deleted ann/whole (3 versions)" in ok(vera(server, "delete", "ann/whole", "--all", "--yes"))
    assert vera(server, "show", "ann/whole@prod").returncode == 1
    with RegistryClient(server["url"], "") as client:
        deletions = [e.target for e in client.events(adapter="ann/whole").events if e.action == "delete"]
        assert deletions == ["ann/whole:3", "ann/whole:2", "ann/whole:1"]  # each audited, newest first
        with pytest.raises(NotFound, match="No adapter ann/whole"):
            client.delete_adapter("ann/whole")
    assert _publish(server, "ann/whole") == "ann/whole:4"  # its numbers are not given again
    mistaken = vera(server, "delete", "ann/whole:4", "--all")
    assert mistaken.returncode == 1 and "--all deletes a whole adapter: name it as owner/name" in mistaken.stderr


def test_lineage_prints_a_tree_and_json(server: dict[str, Any]) -> None:
    root = _publish(server, "ann/tree-root")
    child = _publish(server, "ann/tree-child", "--parent", root, "--code-revision", "git 0123abc")
    grandchild = _publish(server, "ann/tree-grandchild", "--parent", child)
    text = ok(vera(server, "lineage", child))
    assert text.index(root) < text.index(child) < text.index(grandchild) and "<- this version" in text
    # and what made it besides its parent (a job, data, code: `vera show` alone said so, session 51's walk)
    assert f"{child} was made by: code git 0123abc" in text and "made by" not in ok(vera(server, "lineage", root))
    graph = json.loads(ok(vera(server, "lineage", child, "--json")))
    assert {(e["parent"], e["child"]) for e in graph["edges"]} == {(root, child), (child, grandchild)}


def test_every_listing_prints_json(server: dict[str, Any]) -> None:
    ref = _publish(server, "ann/listed")
    page = json.loads(ok(vera(server, "ls", "--owner", "ann", "--json")))
    assert ref in [v["ref"] for v in page["items"]] and "next_cursor" in page
    assert "tiny-llama" in [b["name"] for b in json.loads(ok(vera(server, "base", "ls", "--json")))]
    assert json.loads(ok(vera(server, "job", "ls", "--json"))) == []
    # and an empty listing says so, with the filter it applied (it printed a header alone: a newcomer's walk)
    assert ok(vera(server, "job", "ls")).strip() == "no jobs; `vera job submit` queues one"
    assert ok(vera(server, "job", "ls", "--status", "failed", "--owner", "ann")).strip() == "no failed jobs of ann"
    assert json.loads(ok(vera(server, "hub", "status", ref, "--json"))) == []


def test_ls_stays_readable_in_80_columns(server: dict[str, Any]) -> None:
    long_ref = _publish(server, "a-rather-long-owner-name/an-adapter-with-a-long-name", "--tag", "some-tag")
    wide = ok(vera(server, "ls", "--owner", "a-rather-long-owner-name", columns=200))
    assert long_ref in wide and "seed" in wide and "not shown" not in wide
    narrow = ok(vera(server, "ls", "--owner", "a-rather-long-owner-name", columns=80))
    assert long_ref in narrow and "…" not in narrow  # the whole reference, nothing cut short
    assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
    assert " r " in narrow and "not shown (narrow terminal): " in narrow and "--json has everything" in narrow


def test_a_metrics_lists_and_objects_are_written_as_its_numbers_are() -> None:
    """`vera show` wrote a run's evaluations as Python's repr ([{'step': 189.0, 'eval_loss': 0.3091912467323152,
    ...}]), beside numbers to 6 significant digits (a new user's walk, session 26)."""
    from registry.cli.catalog import metric_text

    evaluations = [{"step": 189.0, "eval_loss": 0.3091912467323152, "eval_accuracy": 0.8714090287277702}]
    assert metric_text(evaluations) == "[{step: 189, eval_loss: 0.309191, eval_accuracy: 0.871409}]"
    assert metric_text(0.8714090287277702) == "0.871409" and metric_text(3) == "3" and metric_text("x") == "x"
    curve = [[step, 1 / step] for step in range(1, 8)]
    assert metric_text(curve) == "7 entries: [1, 1], ..., [7, 0.142857] (`--json` for all)"
