"""A base model name that reads as a folder path is refused by the API too, not only by `vera publish` (an
outsider's re-check, session 33: the CLI refused `./some/path`, the API and RegistryClient.publish took it); a base
named so before the check keeps taking versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.domain.errors import InvalidInput
from registry.services.registry import Registry
from tests.registry.adapters import make_adapter


@pytest.mark.parametrize("base", ["./some/path", "/abs/x", "../x", "~/m", "C:\\m", "org/sub/model", "file://x"])
def test_a_folder_path_as_a_new_base_model_is_refused(registry: Registry, tmp_path: Path, base: str) -> None:
    with pytest.raises(InvalidInput, match=r"is a folder path; a version is keyed by its base model's Hub id or "
                                           r"registry name"):
        registry.publish(make_adapter(tmp_path / "a"), owner="ann", name="p", base_model=base)
    assert registry.list_base_models() == [] and registry.list_versions().items == []


def test_a_base_named_by_a_path_before_the_check_keeps_taking_versions(registry: Registry, tmp_path: Path) -> None:
    from registry.store import models as m

    source = make_adapter(tmp_path / "a")
    first = registry.publish(source, owner="ann", name="p", base_model="tiny")
    with registry.db.session() as s:  # as a registry from before the check recorded one
        s.query(m.BaseModelShapes).filter_by(name="tiny").update({"name": "./models/tiny"})
    again = registry.publish(make_adapter(tmp_path / "b", seed=2), owner="ann", name="p", base_model="./models/tiny")
    assert (first.version, again.version) == (1, 2) and again.base_model == "./models/tiny"


def test_a_folder_path_is_not_declared_as_a_base_either(registry: Registry, tmp_path: Path) -> None:
    """Declaring a base by a path name, then publishing for it, took the path as a base (the review of session 33):
    refused at the declaration too; a base named so before the check still takes declarations."""
    from registry.store import models as m

    shapes = {"model.layers.0.q_proj": [8, 8]}
    with pytest.raises(InvalidInput, match=r"'\./models/x' is a folder path"):
        registry.base_models.register(name="./models/x", shapes=shapes)
    assert registry.list_base_models() == []
    registry.base_models.register(name="tiny", shapes=shapes)
    with registry.db.session() as s:
        s.query(m.BaseModelShapes).filter_by(name="tiny").update({"name": "./models/tiny"})
    declared = registry.base_models.register(name="./models/tiny", revision="v2", shapes=shapes)
    assert declared.name == "./models/tiny" and declared.revision == "v2"
