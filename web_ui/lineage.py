"""Lineage on the Adapter page: where a version came from and what was made from it, drawn as a graph (ancestors
above, descendants below, the version itself highlighted, each node a link to its own page), the same as two lists
of links, and the recorded facts (parent, job, dataset, code revision, Hub source) as a readable list."""

from __future__ import annotations

import re
from typing import Any

import streamlit as st

from registry.client import RegistryClient
from registry.domain.schemas import LineageGraph, LineageNode, VersionInfo
from web_ui import formats, navigation, session, views

#: The version shown: filled with Streamlit's primary red; its relatives in the light grey of Streamlit's widgets.
SELF_COLOUR, OTHER_COLOUR = "#ff4b4b", "#f0f2f6"


def _quoted(text: str) -> str:
    """A DOT string literal (names are [a-z0-9._-], so only a quote needs escaping; ``\\n`` stays a line break)."""
    return '"' + text.replace('"', '\\"') + '"'


def _node(node: LineageNode) -> str:
    """One DOT node: its ref and who published it when, a link to its Adapter page, the version itself filled."""
    label = f"{node.ref}{' (yanked)' if node.yanked else ''}\\n{node.published_by}, {node.created_at:%Y-%m-%d}"
    attrs = {"label": label, "URL": navigation.version_link(node.ref), "target": "_self",
             "tooltip": f"Open {node.ref}"}
    if node.depth == 0:
        attrs |= {"fillcolor": SELF_COLOUR, "fontcolor": "white", "penwidth": "2"}
    if node.yanked:
        attrs["style"] = "rounded,filled,dashed"
    body = ", ".join(f"{key}={_quoted(value)}" for key, value in attrs.items())
    return f"  {_quoted(node.ref)} [{body}];"


def dot(graph: LineageGraph) -> str:
    """The graph in Graphviz's DOT language: parents above children, one rank per generation."""
    lines = ["digraph lineage {", "  rankdir=TB; bgcolor=transparent;",
             f'  node [shape=box, style="rounded,filled", fillcolor="{OTHER_COLOUR}", fontname="sans-serif", '
             'fontsize=11];', '  edge [color="#808495"];']
    lines += [_node(n) for n in sorted(graph.nodes, key=lambda n: (n.depth, n.ref))]
    for depth in sorted({n.depth for n in graph.nodes}):
        same = " ".join(_quoted(n.ref) for n in graph.nodes if n.depth == depth)
        lines.append(f"  {{rank=same; {same}}}")
    lines += [f"  {_quoted(e.parent)} -> {_quoted(e.child)};" for e in graph.edges]
    return "\n".join([*lines, "}"])


def _links(nodes: list[LineageNode]) -> str:
    return ", ".join(f"[{n.ref}]({navigation.version_link(n.ref)})" + (" (yanked)" if n.yanked else "")
                     for n in nodes)


def relatives(graph: LineageGraph) -> list[views.Item]:
    """The graph in words: what the version came from (nearest first) and what was made from it, as links; then
    the copies of it (`vera cp`) the caller may read."""
    ancestors = sorted((n for n in graph.nodes if n.depth < 0), key=lambda n: -n.depth)
    descendants = sorted((n for n in graph.nodes if n.depth > 0), key=lambda n: (n.depth, n.ref))
    copies = [views.Item(None, "Copied to", ", ".join(f"[{c}]({navigation.version_link(c)})" for c in graph.copies))
              ] if graph.copies else []
    return [views.Item(None, "Parent versions", _links(ancestors) if ancestors else "none recorded"),
            views.Item(None, "Derived versions", _links(descendants) if descendants else "none yet"), *copies]


def _linked(lineage: dict[str, Any], key: str, label: str) -> list[views.Item]:
    """The version the lineage names under ``key`` (the parent, the one a copy copies) as a link, or what became of
    it (``key_deleted``, ``key_private``)."""
    if key in lineage and "://" in str(lineage[key]):  # a version of another registry, as its publisher stated it:
        return [views.Item(None, label, f"{code_span(str(lineage[key]))} (another registry)")]  # text, no link
    if key in lineage:
        return [views.Item(None, label, f"[{lineage[key]}]({navigation.version_link(lineage[key])})")]
    if f"{key}_deleted" in lineage:
        return [views.Item(None, label, f"{lineage[f'{key}_deleted']}, since deleted")]
    if lineage.get(f"{key}_private"):
        return [views.Item(None, label, "a private version this token may not read")]
    return []


def facts(lineage: dict[str, Any]) -> list[views.Item]:
    """A version's ``lineage`` block as checklist lines: the version it copies, parent, job (a link to Train),
    dataset SHA-256 and size, code revision, Hub repo and commit; keys it does not know are listed as they are."""
    items = [*_linked(lineage, "copied_from", "Copy of"), *_linked(lineage, "parent", "Fine-tuned from")]
    if "job_id" in lineage:
        job = lineage["job_id"]
        items.append(views.Item(None, "Training job", f"[job {job}]({navigation.job_link(job)})"))
    if "dataset_sha256" in lineage:
        size = lineage.get("dataset_bytes")
        items.append(views.Item(None, "Dataset", f"SHA-256 `{lineage['dataset_sha256']}`"
                                + (f", {formats.size(size)}" if isinstance(size, int) else "")))
    if "code_revision" in lineage:
        items.append(views.Item(None, "Code revision", code_span(str(lineage["code_revision"]))))  # caller's text:
        # never a link (a re-check's finding, session 46: a backtick in it closed the code span)
    if "hub_repo" in lineage:
        commit = lineage.get("hub_commit")
        items.append(views.Item(None, "Pulled from the Hub", code_span(str(lineage["hub_repo"]))
                                + (f" at commit {code_span(str(commit))}" if commit else "")))
    if isinstance(via := lineage.get("published_via"), dict):  # the run itself: its own section, below
        items.append(views.Item(None, "Published by CI", f"a run of trusted publisher "
                                f"{code_span(str(via.get('publisher', '?')))} (below)"))
    known = {"parent", "parent_deleted", "parent_private", "job_id", "dataset_sha256", "dataset_bytes",
             "code_revision", "hub_repo", "hub_commit", "published_via", "copied_from", "copied_from_deleted",
             "copied_from_private"}
    items += [views.Item(None, key.replace("_", " "), views.cell(value))
              for key, value in lineage.items() if key not in known]
    return items


#: What a CI run's recorded claims are called on the page, in this order (GitHub Actions', then GitLab CI's names).
CI_LABELS = (("Repository", ("repository", "project_path")), ("Ref", ("ref",)), ("Commit", ("sha",)),
             ("Workflow", ("workflow", "job_workflow_ref")), ("Run", ("run_id", "pipeline_id")),
             ("Triggered by", ("actor", "user_login")), ("Event", ("event_name", "pipeline_source")))
#: The issuers whose runs have pages at a known address: their repository, commit and run become links.
_GITHUB, _GITLAB = "https://token.actions.githubusercontent.com", "https://gitlab.com"
_PATTERNS = {"repository": re.compile(r"[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}"),
             "project_path": re.compile(r"[A-Za-z0-9._-]{1,100}(/[A-Za-z0-9._-]{1,100}){1,20}"),
             "sha": re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}"), "run_id": re.compile(r"[0-9]{1,20}"),
             "pipeline_id": re.compile(r"[0-9]{1,20}")}


def _ci_links(issuer: Any, claims: dict[str, Any]) -> dict[str, str]:
    """{claim: the URL of its page} for a run of GitHub Actions or gitlab.com whose values have the forms those
    hosts use (anything else is shown as text: a link is built only from values that cannot leave the host)."""
    def fits(name: str) -> bool:
        return isinstance(claims.get(name), str) and bool(_PATTERNS[name].fullmatch(claims[name]))

    if issuer == _GITHUB and fits("repository"):
        home = f"https://github.com/{claims['repository']}"
        return {"repository": home, **({"sha": f"{home}/commit/{claims['sha']}"} if fits("sha") else {}),
                **({"run_id": f"{home}/actions/runs/{claims['run_id']}"} if fits("run_id") else {})}
    if issuer == _GITLAB and fits("project_path"):
        home = f"https://gitlab.com/{claims['project_path']}"
        return {"project_path": home, **({"sha": f"{home}/-/commit/{claims['sha']}"} if fits("sha") else {}),
                **({"pipeline_id": f"{home}/-/pipelines/{claims['pipeline_id']}"} if fits("pipeline_id") else {})}
    return {}


def ci_details(via: dict[str, Any]) -> list[views.Item]:
    """The CI run that published a version, one labelled line per recorded claim (the commit whole), each value as
    code, linked to its page on GitHub or gitlab.com; then the trusted publisher and the issuer."""
    given = via.get("claims")
    claims: dict[str, Any] = given if isinstance(given, dict) else {}
    links = _ci_links(via.get("issuer"), claims)
    items, said = [], set()
    for label, names in CI_LABELS:
        name = next((n for n in names if isinstance(claims.get(n), str)), None)
        if name is not None:
            said.add(name)
            shown = code_span(claims[name])
            items.append(views.Item(None, label, f"[{shown}]({links[name]})" if name in links else shown))
    items += [views.Item(None, name.replace("_", " ").capitalize(), code_span(value))
              for name, value in sorted(claims.items()) if name not in said and isinstance(value, str)]
    if not said and isinstance(via.get("subject"), str):
        items.append(views.Item(None, "Subject", code_span(via["subject"])))
    return [*items, views.Item(None, "Trusted publisher", code_span(str(via.get("publisher", "?")))),
            views.Item(None, "Issuer", code_span(str(via.get("issuer", "?"))))]


def code_span(text: str) -> str:
    """``text`` as Markdown code, whatever backticks it holds (a fence longer than its longest run of them): never
    a link, emphasis or a line break (a CI run's claims are its issuer's words; controls were replaced on record)."""
    if not text:  # "``" is drawn as two backticks
        return "(empty)"
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def as_seen(recorded: dict[str, Any], graph: LineageGraph) -> dict[str, Any]:
    """The version's lineage block with the version it copies named where the graph names it to this caller (the
    block names it only where every reader of the version may read it)."""
    if graph.copied_from is None:
        return recorded
    seen = {k: v for k, v in recorded.items() if k not in ("copied_from_private", "copied_from_deleted")}
    return {"copied_from": graph.copied_from, **seen}


def section(info: VersionInfo) -> None:
    """The Lineage tab: the graph both ways, the same in words, and the recorded facts."""
    graph = session.read(RegistryClient.lineage, info.ref)
    if len(graph.nodes) > 1:
        st.graphviz_chart(dot(graph),
                          alt=f"Lineage of {info.ref}: what it came from above it, what was made from it below")
        st.caption(f"{info.ref} is highlighted; click a version to open it."
                   + (" The walk stopped at the registry's bounds: more lie beyond." if graph.truncated else ""))
    views.checklist(relatives(graph))
    st.markdown("**How it was made**")
    if info.lineage:
        views.checklist(facts(as_seen(info.lineage, graph)))
    else:
        st.caption("Published directly (no parent, job or Hub source recorded).")
    if isinstance(via := info.lineage.get("published_via"), dict):
        st.markdown("**The CI run that published it**")
        views.checklist(ci_details(via))
