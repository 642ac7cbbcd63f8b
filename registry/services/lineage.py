"""Lineage (issue 16): where versions came from and what was made from them, as a graph ready to draw.

A version records its parent (the version it was fine-tuned from, ``parent`` at publish), its job, its job's
dataset hash and size, the code revision and the Hub repo and commit it was pulled from (registry.services.lookup
``lineage_block``). ``Lineage.graph`` walks parents up and children down, bounded in depth and in nodes, in one
transaction. ``running_code_revision`` is what a worker records as the code that trained a version.
"""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, selectinload

from registry.domain.errors import InvalidInput
from registry.domain.schemas import (
    MAX_LINEAGE_DEPTH,
    MAX_LINEAGE_NODES,
    LineageEdge,
    LineageGraph,
    LineageNode,
    Ref,
)
from registry.services.access import readable_clause
from registry.services.lookup import copied_elsewhere, lineage_block, resolve, version_ref
from registry.services.tokens import Principal
from registry.store import models as m
from registry.store.database import Database


def _node(s: Session, v: m.AdapterVersion, depth: int) -> LineageNode:
    return LineageNode(ref=version_ref(v), owner=v.adapter.owner, name=v.adapter.name, version=v.version,
                       depth=depth, yanked=v.yanked, published_by=v.published_by, created_at=v.created_at,
                       lineage=lineage_block(s, v))


class Lineage:
    def __init__(self, db: Database) -> None:
        self.db = db

    def graph(self, ref: str | Ref, *, depth: int = MAX_LINEAGE_DEPTH, limit: int = MAX_LINEAGE_NODES,
              viewer: Principal | None = None) -> LineageGraph:
        """The version ``ref`` names with its ancestors (up to ``depth`` parents) and descendants (up to ``depth``
        generations), at most ``limit`` of each, oldest generations first among descendants; versions of adapters
        ``viewer`` may not read (None: every one is read) are left out, with what lies beyond them, and are neither
        counted against ``limit`` nor make the graph ``truncated``. Beside the graph: the version it copies and its
        copies (`vera cp`), those ``viewer`` may read."""
        if not 1 <= depth <= MAX_LINEAGE_DEPTH:
            raise InvalidInput(f"depth must be between 1 and {MAX_LINEAGE_DEPTH}, got {depth}.")
        if not 1 <= limit <= MAX_LINEAGE_NODES:
            raise InvalidInput(f"limit must be between 1 and {MAX_LINEAGE_NODES}, got {limit}.")
        with self.db.session() as s:
            start = resolve(s, ref)
            nodes = [_node(s, start, 0)]
            edges: list[LineageEdge] = []
            up_cut = self._ancestors(s, start, depth, limit, viewer, nodes, edges)
            down_cut = self._descendants(s, start, depth, limit, readable_clause(viewer), nodes, edges)
            source = s.get(m.AdapterVersion, start.copied_from_version_id) if start.copied_from_version_id else None
            copies = s.scalars(select(m.AdapterVersion).join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id)
                               .where(m.AdapterVersion.copied_from_version_id == start.id, readable_clause(viewer))
                               .order_by(m.AdapterVersion.id).limit(limit))
            shown = source if source is not None and (
                viewer is None or viewer.can_read(source.adapter.owner, source.adapter.visibility)) else None
            told = version_ref(shown) if shown else start.copied_from_ref if copied_elsewhere(start) else None
            return LineageGraph(ref=nodes[0].ref, nodes=nodes, edges=edges, max_depth=depth, max_nodes=limit,
                                truncated=up_cut or down_cut, copied_from=told, copies=[version_ref(c) for c in copies])

    @staticmethod
    def _ancestors(s: Session, start: m.AdapterVersion, depth: int, limit: int, viewer: Principal | None,
                   nodes: list[LineageNode], edges: list[LineageEdge]) -> bool:
        """Append the parent chain; True if it goes on beyond the bounds."""
        seen, child = {start.id}, start
        for level in range(1, min(depth, limit) + 1):
            parent = s.get(m.AdapterVersion, child.parent_version_id) if child.parent_version_id else None
            if parent is None or parent.id in seen or not (  # (a cycle cannot be published)
                    viewer is None or viewer.can_read(parent.adapter.owner, parent.adapter.visibility)):
                return False
            seen.add(parent.id)
            nodes.append(_node(s, parent, -level))
            edges.append(LineageEdge(parent=version_ref(parent), child=version_ref(child)))
            child = parent
        return child.parent_version_id is not None

    @staticmethod
    def _descendants(s: Session, start: m.AdapterVersion, depth: int, limit: int, readable: ColumnElement[bool],
                     nodes: list[LineageNode], edges: list[LineageEdge]) -> bool:
        """Append the children of adapters ``readable`` holds for, generation by generation; True if some of those
        were left out. The condition is in the query: filtered after it, unreadable children took places of the
        limit, and the last generation's check counted them, so that a graph said (truncated) that private versions
        were made from it (an outsider's finding, session 43)."""

        def children_of(ids: list[int]) -> Any:
            return (select(m.AdapterVersion).join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id)
                    .where(m.AdapterVersion.parent_version_id.in_(ids), readable))

        frontier, refs, found = [start.id], {start.id: version_ref(start)}, 0
        for level in range(1, depth + 1):
            children = list(s.scalars(children_of(frontier).order_by(m.AdapterVersion.id).limit(limit - found + 1)
                                      .options(selectinload(m.AdapterVersion.adapter))))
            if not children:
                return False
            if found + len(children) > limit:
                children = children[:limit - found]
                cut = True
            else:
                cut = False
            for child in children:
                refs[child.id] = version_ref(child)
                nodes.append(_node(s, child, level))
                edges.append(LineageEdge(parent=refs[child.parent_version_id or start.id], child=refs[child.id]))
            found += len(children)
            if cut:
                return True
            frontier = [c.id for c in children]
        return s.scalar(children_of(frontier).with_only_columns(m.AdapterVersion.id).limit(1)) is not None


@functools.cache
def running_code_revision() -> str:
    """The code this process runs, as a worker records it with what it trains: ``vera-registry <version>``, with
    ``git <commit>`` (and ``+dirty``) when it runs from a git checkout."""
    try:
        text = f"vera-registry {version('vera-registry')}"
    except PackageNotFoundError:
        text = "vera-registry (not installed)"
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text} git {commit}{'+dirty' if dirty else ''}" if len(commit) == 40 else text
