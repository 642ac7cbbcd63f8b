"""Base models and the shapes of their adaptable layers: declared (from a model or its config) or implied by the
adapters published for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.schemas import BaseModelInfo, check_text, path_like
from registry.domain.words import counted
from registry.services.access import shown_to
from registry.services.shapes import declared_layers, in_features_json, match_path, shapes_fingerprint, shapes_of
from registry.services.tokens import Principal
from registry.store import models as m
from registry.store.database import Database
from vera_core.keys import META_IN_FEATURES, META_SHAPE

if TYPE_CHECKING:
    import torch

    from registry.services.validation import CheckedAdapter
    from vera_core import AdapterFiles


def _row(s: Session, name: str, revision: str) -> m.BaseModelShapes | None:
    return s.scalar(select(m.BaseModelShapes).where(m.BaseModelShapes.name == name,
                                                    m.BaseModelShapes.revision == revision))


def _shown_to_all(s: Session, row: m.BaseModelShapes) -> bool:
    """Whether every caller may see ``row``'s shapes (GET /api/v1/base-models shows a base to anyone when a public
    adapter's version uses it, or none does: registry.services.access.shown_to). Refusals that compare with the
    base's shapes state them only then: stated to anyone, they gave the layers and sizes of a model whose adapters
    are all private (an outsider's finding, session 54)."""
    users = select(m.AdapterVersion.id).where(m.AdapterVersion.base_model_id == row.id)
    public = users.join(m.Adapter, m.Adapter.id == m.AdapterVersion.adapter_id).where(m.Adapter.visibility == "public")
    return bool(s.scalar(select(or_(public.exists(), ~users.exists()))))


def refuse_a_new_path(s: Session, name: str) -> None:
    """A base model name that reads as a folder path is refused, unless a base is named so already (published before
    this check: it keeps taking versions and declarations). Publishing and declaring alike: a path declared first
    was a base a publish then took."""
    if path_like(name) and s.scalar(select(m.BaseModelShapes.id).where(m.BaseModelShapes.name == name)
                                    .limit(1)) is None:
        raise InvalidInput(f"base_model {name[:200]!r} is a folder path; a version is keyed by its base model's Hub "
                           "id or registry name, the same on every machine (`vera base ls` lists those this "
                           "registry knows), e.g. minilm.")


def base_info(row: m.BaseModelShapes) -> BaseModelInfo:
    return BaseModelInfo(id=row.id, name=row.name, revision=row.revision, shapes_fingerprint=row.shapes_fingerprint,
                         shapes_source=row.shapes_source, layers=len(row.shapes), created_at=row.created_at)


class BaseModels:
    """Declared and implied base-model shapes; one transaction per public method."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register(
        self, *, name: str, revision: str = "", model: torch.nn.Module | None = None,
        shapes: dict[str, list[int]] | None = None, actor: str | None = None, source: str | None = None,
    ) -> BaseModelInfo:
        """Declare a base model's exact layer shapes, from a model (meta device is fine) or a shapes mapping.
        Shapes that earlier publishes implied become declared ones if they agree; otherwise Conflict says where.
        With ``actor`` (a caller of the API) the declaration is audited, with ``source`` (where the config came
        from) when the registry read it itself."""
        check_text(name, "Base model name", max_length=200)
        check_text(revision, "Base model revision", max_length=100)
        if not name:
            raise InvalidInput("A base model needs a name (a Hub id or the name adapters are published with).")
        if (model is None) == (shapes is None):
            raise InvalidInput("Pass exactly one of model or shapes to register a base model.")
        declared = shapes_of(model) if model is not None else {k: list(v) for k, v in (shapes or {}).items()}
        if not declared:
            raise InvalidInput(f"Base model {name!r} has no nn.Linear or Conv1D layer; nothing could be adapted.")
        with self.db.session() as s:
            refuse_a_new_path(s, name)
            row = _row(s, name, revision)
            fp = shapes_fingerprint(declared)
            if row is None:
                row = m.BaseModelShapes(name=name, revision=revision, shapes=declared, shapes_fingerprint=fp,
                                        shapes_source="declared")
                s.add(row)
            elif row.shapes_source == "declared" and row.shapes_fingerprint != fp:
                raise Conflict(f"Base model {name}@{revision or 'default'} is already registered with other layer "
                               "shapes; register the new weights under another revision.")
            else:  # implied shapes become declared ones, if they agree
                _check_implied(s, row, declared)
                row.shapes, row.shapes_fingerprint, row.shapes_source = declared, fp, "declared"
            s.flush()
            if actor is not None:
                s.add(m.AuditEvent(actor=actor, action="base-register", target=f"{name}@{revision}",
                                   detail={"layers": len(declared), "fingerprint": fp,
                                           **({"source": source} if source else {})}))
            return base_info(row)

    def register_from_config(self, *, name: str, revision: str = "", config_path: str) -> BaseModelInfo:
        """Exact shapes from a transformers config.json, built on the meta device (no weights, no memory)."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(config_path)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{config_path} is not a transformers config: {exc}") from exc
        return self.register(name=name, revision=revision, model=meta_model(config))

    def register_from_config_dict(self, *, name: str, revision: str = "", config: dict[str, Any],
                                  actor: str, source: str | None = None) -> BaseModelInfo:
        """Exact shapes from the content of a transformers config.json sent by a caller (any architecture
        transformers knows; never remote code), built on the meta device; audited."""
        from transformers import AutoConfig

        _check_depth(config)
        kind = config.get("model_type")
        if not isinstance(kind, str):
            raise InvalidInput("The config has no model_type; send the base model's transformers config.json.")
        try:
            parsed = AutoConfig.for_model(kind, **{k: v for k, v in config.items() if k != "model_type"})
        except Exception as exc:  # noqa: BLE001 - a caller's config runs transformers' own checks, whose errors
            # are of every kind (ValueError, a dataclass error for hidden_size=1e400, ZeroDivisionError for
            # num_attention_heads=0, AttributeError for torch_dtype='float128', AssertionError): each a 422 here
            raise InvalidInput(f"Not a transformers config transformers knows ({type(exc).__name__}: "
                               f"{str(exc)[:200]}).") from exc
        return self.register(name=name, revision=revision, model=meta_model(parsed), actor=actor, source=source)

    def remove(self, *, name: str, revision: str = "", actor: str) -> BaseModelInfo:
        """Forget the shapes of ``name@revision`` that no version was published against (a registry admin's remedy
        when a publisher declared wrong shapes for a name others publish with: declared shapes cannot change, and
        honest publishes were refused against them; an outsider's finding). NotFound if unknown; Conflict while a
        version uses it (its shapes are those versions'). Audited as ``base-remove``, seen by every reader, as
        ``base-register`` is. The name can then be declared again, or implied by the next publish."""
        with self.db.session() as s:
            row = s.scalar(select(m.BaseModelShapes).where(m.BaseModelShapes.name == name,
                                                           m.BaseModelShapes.revision == revision).with_for_update())
            if row is None:
                raise NotFound(f"No base model {name}@{revision or 'default'}; `vera base ls` lists them.")
            used = s.scalar(select(func.count()).select_from(m.AdapterVersion).where(
                m.AdapterVersion.base_model_id == row.id)) or 0
            if used:
                raise Conflict(f"{name}@{revision or 'default'} has {counted(used, 'version')} published against it: "
                               "its shapes are theirs, and stay while they do (delete those versions first to change "
                               "its shapes).")
            info = base_info(row)
            s.delete(row)
            s.add(m.AuditEvent(actor=actor[:64], action="base-remove", target=name, detail={
                "revision": revision, "layers": info.layers, "fingerprint": info.shapes_fingerprint,
                "source": info.shapes_source}))
            return info

    def list(self, viewer: Principal | None = None) -> list[BaseModelInfo]:
        """The base models (those ``viewer`` may see: registry.services.access.shown_to)."""
        query = select(m.BaseModelShapes).where(
            shown_to(viewer, m.AdapterVersion.base_model_id, m.BaseModelShapes.id)).order_by(m.BaseModelShapes.name)
        with self.db.session() as s:
            return [base_info(b) for b in s.scalars(query)]

    def is_declared(self, name: str, revision: str) -> bool:
        """Whether ``name@revision`` has declared shapes (not only those publishes implied)."""
        with self.db.session() as s:
            row = _row(s, name, revision)
            return row is not None and row.shapes_source == "declared"

    def with_declared_shapes(self, files: AdapterFiles, name: str, revision: str) -> AdapterFiles:
        """PEFT sizes A and B to the largest adapted layer; with the base's declared shapes the registry can too
        (for seed-only adapters PEFT wrote, which record no projection shape)."""
        with self.db.session() as s:
            row = _row(s, name, revision)
            shapes = dict(row.shapes) if row is not None and row.shapes_source == "declared" else None
        if shapes is None:
            return files
        sizes = declared_layers(shapes, files.tensors)
        if not sizes:
            return files  # validation explains; the shapes check would name the layer
        max_out, max_in = max(o for o, _ in sizes.values()), max(i for _, i in sizes.values())
        metadata = {**files.metadata, META_SHAPE: f"{files.config.r},{max_in},{max_out}",
                    META_IN_FEATURES: in_features_json(sizes)}
        from vera_core import AdapterFiles  # torch: this is a publish, which has imported it

        return AdapterFiles(files.config, files.tensors, metadata)

    @staticmethod
    def for_publish(s: Session, name: str, revision: str, checked: CheckedAdapter) -> m.BaseModelShapes:
        """The base row a publish records (created with implied shapes if new), after checking the adapter's
        layers against it; implied shapes grow with the layers new adapters show. Runs in the publish's session."""
        row = _row(s, name, revision)
        if row is None:
            implied = {path: [out, None] for path, out in sorted(checked.layer_outs.items())}
            row = m.BaseModelShapes(name=name, revision=revision, shapes=implied, shapes_source="implied",
                                    shapes_fingerprint=shapes_fingerprint(implied))
            s.add(row)
            s.flush()
            return row
        problems = []
        max_in = 0
        said = _shown_to_all(s, row)
        for path, out in checked.layer_outs.items():
            shape = match_path(row.shapes, path)
            if shape is None:
                if row.shapes_source == "declared":
                    problems.append(f"{path}: no such layer")
                continue
            if shape[0] != out:
                problems.append(f"{path}: {out} outputs, " + (f"the base has {shape[0]}" if said else
                                                               "not the number its other adapters give it"))
            max_in = max(max_in, shape[1] or 0)
        if row.shapes_source == "declared" and max_in and max_in != checked.spec.max_in:
            problems.append(f"projection sized for {checked.spec.max_in} inputs, the adapted layers have "
                            + (f"{max_in}" if said else "another number"))
        if problems:
            raise InvalidInput(f"The adapter does not fit base model {name}@{revision or 'default'}: "
                               + "; ".join(problems[:5]) + ". Check --base-model and the adapter's target_modules.")
        if row.shapes_source == "implied":
            merged = dict(row.shapes)
            merged.update({p: [o, None] for p, o in checked.layer_outs.items() if match_path(merged, p) is None})
            if merged != row.shapes:
                row.shapes, row.shapes_fingerprint = merged, shapes_fingerprint(merged)
        return row


def _check_implied(s: Session, row: m.BaseModelShapes, declared: dict[str, Any]) -> None:
    """Conflict unless ``declared`` agrees with the shapes the adapters published for ``row`` imply, saying which layer
    where the base is shown to all (_shown_to_all)."""
    for path, (out, _) in row.shapes.items():
        shape = match_path(declared, path)
        if shape is not None and shape[0] == out:
            continue
        if not _shown_to_all(s, row):
            raise Conflict(f"Adapters published for base model {row.name}@{row.revision or 'default'} imply other "
                           "layer shapes than these; register these under another revision (or check the config).")
        raise Conflict(f"Published adapters imply layer {path!r} with {out} outputs, which these shapes "
                       + ("lack." if shape is None else f"give {shape[0]}.")
                       + " Register these under another revision (or check the config).")


#: Config fields that multiply the modules a model builds; bounded so a config cannot make the server build forever.
_DEPTH_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers",
                 "num_experts", "num_local_experts")
MAX_DEPTH = 1024


def _check_depth(config: dict[str, Any]) -> None:
    for key in _DEPTH_FIELDS:
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_DEPTH):
            raise InvalidInput(f"{key}={str(value)[:40]} in the config is not an integer between 0 and {MAX_DEPTH}.")


def meta_model(config: Any) -> torch.nn.Module:
    """The model a config describes, on the meta device: shapes without weights or memory (never remote code)."""
    import torch
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            model: torch.nn.Module = AutoModel.from_config(config, trust_remote_code=False)  # type: ignore[no-untyped-call]
    except Exception as exc:  # noqa: BLE001 - as for_model's: a config's sizes fail in every way (a negative one:
        # RuntimeError; zero heads: ZeroDivisionError), never a 500
        raise InvalidInput(f"transformers cannot build a model from this config ({type(exc).__name__}: "
                           f"{str(exc)[:200]}).") from exc
    return model
