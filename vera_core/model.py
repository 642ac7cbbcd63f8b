"""VeraModel: injects VeRA layers into any torch model, with ONE shared projection sized to the largest layer."""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from vera_core.config import VeraConfig
from vera_core.distributed import refuse_sharded
from vera_core.errors import AdapterFormatError, VeraConfigError, VeraError
from vera_core.keys import PEFT_PREFIX, PROJECTION_KEYS, module_path
from vera_core.layer import ComputeStrategy, SharedProjection, VeraLinear, is_conv1d, layer_shape
from vera_core.projection import ProjectionSpec, fingerprint, generate
from vera_core.targets import find_targets, resolve_targets

#: Targeted layers whose base weight PEFT also stores in the adapter (its save_embedding_layers="auto"): a
#: vocabulary may have been resized for them.
EMBEDDING_LAYER_NAMES = ("embed_tokens", "lm_head")
BASE_WEIGHT = ".base_layer.weight"
#: Where PEFT's key of a head's trained copy inside its ModulesToSaveWrapper begins (``<head>.modules_to_save.``,
#: then the adapter's name or not), which bias="all" also saves beside the head's plain keys.
_WRAPPED_COPY = ".modules_to_save."


def _unwrapped(key: str, tensors: Mapping[str, object]) -> str:
    """The head's own key of ``key``, a copy PEFT saved under ``<head>.modules_to_save.``: with the adapter's name
    after it (``classifier.modules_to_save.default.dense.bias``: a head of several modules) or without
    (``classifier.modules_to_save.bias``, a plain Linear head's, which PEFT 0.21 writes: such an adapter was
    refused, a docs audit, session 54); the one of the two that ``tensors`` hold, else the first."""
    head, _, rest = key.partition(_WRAPPED_COPY)
    candidates = [f"{head}.{rest.partition('.')[2]}"] if "." in rest else []
    candidates.append(f"{head}.{rest}")
    return next((c for c in candidates if c in tensors), candidates[0])


def _own_config(config: object) -> VeraConfig:
    """``config``, or a ``peft.VeraConfig`` read as its adapter_config.json would be (PEFT's generator)."""
    if isinstance(config, VeraConfig):
        return config
    to_dict = getattr(config, "to_dict", None)
    if not callable(to_dict):
        raise VeraError(f"VeraModel needs a vera_core.VeraConfig (or PEFT's VeraConfig); got {type(config).__name__}.")
    data = dict(to_dict())
    if isinstance(data.get("target_modules"), set | frozenset):
        data["target_modules"] = sorted(data["target_modules"])
    return VeraConfig.from_peft_dict(data)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


#: PeftModel's one adapter's name: what ``selected_adapters`` and ``adapter_names`` may name.
DEFAULT_ADAPTER = "default"
#: PEFT's (and transformers' PeftAdapterMixin's) calls for several adapters on one model: found on the wrapped
#: transformers model, they injected another adapter kind into it unasked (``add_adapter(LoraConfig(...))``), or
#: failed naming the wrong class (a researcher's walk, session 48). Refused by VeraModel, saying what to use.
MULTI_ADAPTER_CALLS = frozenset({
    "add_adapter", "load_adapter", "set_adapter", "delete_adapter", "active_adapter", "active_adapters",
    "enable_adapters", "disable_adapters", "enable_adapter_layers", "disable_adapter_layers", "peft_config",
    "add_weighted_adapter", "get_adapter_state_dict"})


class SingleAdapter(VeraError, AttributeError):
    """A PEFT call for several adapters made on a VeraModel, which holds one (an AttributeError: hasattr() stays
    False, as for any name a model lacks)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"VeraModel has no {name}: it holds one VeRA adapter, and PEFT's calls for several adapters would reach "
            "the transformers model inside it (and inject another adapter kind into it). For several VeRA adapters "
            "on one base use vera_core.AdapterBank (mixed batches), or a VeraModel each; to load another adapter, "
            "vera_core.load_adapter(a_fresh_base, folder); to turn the adapter off for a while, "
            "`with model.disable_adapter():`.")


def _one_adapter(names: list[str] | None) -> None:
    """Refuse ``adapter_names`` other than the one adapter a VeraModel holds."""
    if names not in (None, [], [DEFAULT_ADAPTER]):
        raise VeraError(f"adapter_names={names!r}: a VeraModel holds one adapter, {DEFAULT_ADAPTER!r}; leave it out.")


class VeraModel(nn.Module):
    """A base model with VeRA layers injected. Calls go straight to the wrapped model.

    ``model`` keeps the base model's module tree, with each adapted layer replaced by a ``VeraLinear`` whose
    ``base_layer`` is the original layer, so state-dict names match PEFT's (``<path>.base_layer.weight``,
    ``<path>.vera_lambda_b``).

    What trains in full, the ``modules_to_save`` heads and the biases of ``bias="all"`` / ``"vera_only"``, trains
    on copies made here, as PEFT's ``ModulesToSaveWrapper`` does: the tree holds the copies, and the base model's
    own modules and bias parameters are kept aside, frozen, for ``disable_adapter()``. A head whose weight is tied
    to the input embeddings (GPT-2's ``lm_head``) is thereby untied, as in PEFT, and the embeddings stay frozen.
    The originals are not in ``state_dict()`` or ``parameters()``; ``VeraModel.to()`` (not ``model.model.to()``)
    moves them with the rest.
    """

    _originals: nn.Module  # index -> the object not in the tree at _slots[index] (see _set_aside_originals)
    _slots: list[tuple[nn.Module, str]]  # (owner module, attribute name) of each head and trained bias

    def __init__(
        self, model: nn.Module, config: VeraConfig, *, projection: tuple[torch.Tensor, torch.Tensor] | None = None,
        strategy: ComputeStrategy = "auto",
    ) -> None:
        super().__init__()
        config = _own_config(config)
        if any(isinstance(m, VeraLinear) for m in model.modules()):  # TargetError said "a VeraLinear; VeRA adapts
            # only nn.Linear ... Narrow target_modules" (a researcher's walk, session 48)
            raise VeraConfigError(
                "This model already holds VeRA layers (a VeraModel or vera_core.load_adapter put them in it): wrap a "
                "fresh base model, loaded again, or use the VeraModel that holds them; for several adapters on one "
                "base, vera_core.AdapterBank.")
        if config.base_model_name_or_path is None:  # as PEFT records it: where the base came from (Auto* loaders)
            config = config.replace(base_model_name_or_path=getattr(model, "name_or_path", None) or None)
        config = resolve_targets(model, config)
        targets = list(find_targets(model, config))
        config = self._check_fan_in_fan_out(config, targets)
        shapes = [layer_shape(m) for _, m in targets]
        self.max_out = max(s[0] for s in shapes if s)
        self.max_in = max(s[1] for s in shapes if s)
        self.config = config
        self.spec = ProjectionSpec(config.projection_generator, config.projection_prng_key, config.r,
                                   self.max_in, self.max_out)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        a, b = projection if projection is not None else generate(self.spec)
        self.projection = SharedProjection(a.to(device), b.to(device), persistent=False)
        for p in model.parameters():
            p.requires_grad_(False)
        for name, module in targets:
            _set_submodule(model, name, VeraLinear(
                module, self.projection, r=config.r, dropout=config.vera_dropout, init_weights=config.init_weights,
                d_initial=config.d_initial, strategy=strategy,
            ))
        self.model = model
        self.adapted = [name for name, _ in targets]
        # False only when a loaded adapter's stored projections differ from what its seed regenerates.
        self.projection_reproducible = True
        self._disabled_depth = 0  # nesting depth of disable_adapter() blocks
        self._set_aside_originals()
        self._mark_trainable()

    @staticmethod
    def _check_fan_in_fan_out(config: VeraConfig, targets: list[tuple[str, nn.Module]]) -> VeraConfig:
        conv1d = any(is_conv1d(m) for _, m in targets)
        if conv1d and not config.fan_in_fan_out:
            warnings.warn("fan_in_fan_out is False but the targets are transformers Conv1D; setting it to True.",
                          stacklevel=3)
            return config.replace(fan_in_fan_out=True)
        if not conv1d and config.fan_in_fan_out:
            warnings.warn("fan_in_fan_out is True but the targets are nn.Linear; setting it to False.", stacklevel=3)
            return config.replace(fan_in_fan_out=False)
        return config

    def _set_aside_originals(self) -> None:
        """Put trainable copies of the heads and of the biases that will train in the tree; keep the originals.

        ``_slots[i]`` is (owner module, attribute name); the object that is NOT in the tree at that slot is
        ``_originals.<i>``: the frozen original normally, the trained copy inside ``disable_adapter()``.
        """
        self.__dict__["_originals"] = nn.Module()  # not a submodule: kept out of state_dict() and parameters()
        self._slots = []
        heads = list(self.modules_to_save())
        for name, head in heads:
            parent_name, _, child = name.rpartition(".")
            self._keep_original(self.model.get_submodule(parent_name) if parent_name else self.model, child,
                                copy.deepcopy(head))
        biases: list[tuple[nn.Module, str]] = []
        if self.config.bias == "vera_only":
            biases = [(layer.base_layer, "bias") for layer in self.vera_layers() if layer.base_bias is not None]
        elif self.config.bias == "all":
            in_head = {id(m) for _, head in heads for m in head.modules()}
            biases = [(m, n) for m in self.model.modules() if id(m) not in in_head
                      for n, p in m.named_parameters(recurse=False) if n.endswith("bias")]
        copies: dict[int, nn.Parameter] = {}  # a bias shared by several modules gets one copy, still shared
        for owner, attr in biases:
            original = getattr(owner, attr)
            if id(original) not in copies:
                copies[id(original)] = nn.Parameter(original.detach().clone(), requires_grad=False)
            self._keep_original(owner, attr, copies[id(original)])

    def _keep_original(self, owner: nn.Module, attr: str, trainable_copy: nn.Module | nn.Parameter) -> None:
        key = str(len(self._slots))
        original = getattr(owner, attr)
        if isinstance(original, nn.Parameter):
            self._originals.register_parameter(key, original)
        else:
            self._originals.add_module(key, original)
        setattr(owner, attr, trainable_copy)
        self._slots.append((owner, attr))

    def _swap_originals(self) -> None:
        """Exchange the object at each slot of the tree with the one kept aside (its own inverse).

        Parameter and module objects move, values are never copied: autograd graphs built before or during the
        swap, and optimizers holding the trained parameters, stay valid.
        """
        for index, (owner, attr) in enumerate(self._slots):
            key = str(index)
            current, kept = getattr(owner, attr), getattr(self._originals, key)
            if isinstance(kept, nn.Module):
                kept.train(current.training)
            setattr(owner, attr, kept)
            setattr(self._originals, key, current)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> VeraModel:
        """``to()``, ``cuda()``, ``half()``, ...: the originals kept aside move and convert with the model."""
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # untyped in torch
        self._originals._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self

    def _mark_trainable(self) -> None:
        for layer in self.vera_layers():
            layer.vera_lambda_d.requires_grad_(True)
            layer.vera_lambda_b.requires_grad_(True)
            if self.config.bias == "vera_only" and layer.base_bias is not None:
                layer.base_bias.requires_grad_(True)
        if self.config.bias == "all":
            for name, p in self.model.named_parameters():
                if name.endswith("bias"):
                    p.requires_grad_(True)
        for _, module in self.modules_to_save():
            module.requires_grad_(True)

    # ---- introspection -------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        """What the wrapped model has (``generate``, ``device``, ``config``, ``gradient_checkpointing_enable``...),
        as PEFT's PeftModel forwards it; PEFT's calls for several adapters are refused (MULTI_ADAPTER_CALLS)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("model", "_originals", "_slots") or "model" not in self.__dict__.get("_modules", {}):
                raise
            if name in MULTI_ADAPTER_CALLS:
                raise SingleAdapter(name) from None
            return getattr(self.__dict__["_modules"]["model"], name)

    # ---- PeftModel's names for what a VeraModel does --------------------------------------------------------
    def get_base_model(self) -> nn.Module:
        """The wrapped model, with the VeRA layers in it (PEFT's ``get_base_model``)."""
        return self.model

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters), as PEFT counts them: its ModulesToSaveWrapper holds a head's
        original beside the trained copy, so the originals kept aside count too (they did not: a BERT classifier's
        99 parameters short of PEFT's total, a docs audit, session 54); a bias trains in place in PEFT, so the
        originals of biases do not."""
        heads = sum(p.numel() for head in self._originals.children() for p in head.parameters())
        return self.num_trainable_parameters(), sum(p.numel() for p in self.parameters()) + heads

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")

    def save_pretrained(self, save_directory: str | os.PathLike[str], *, safe_serialization: bool = True,
                        save_projection: bool | None = None, is_main_process: bool = True,
                        selected_adapters: list[str] | None = None, save_embedding_layers: bool | str = "auto",
                        **kwargs: Any) -> None:
        """``vera_core.save_adapter`` under PEFT's name; safetensors only (never a pickle). PEFT's keywords that
        ported scripts pass are taken (a TypeError broke them: a researcher's walk, session 48):
        ``is_main_process=False`` writes nothing (accelerate and torchrun scripts pass it on every rank);
        ``selected_adapters`` may name the one adapter, ``"default"``; ``save_embedding_layers`` is "auto" or
        False (VeRA trains no embedding layer). Any other keyword of PEFT's is refused, named."""
        from vera_core.checkpoint import save_adapter

        if not safe_serialization:
            raise VeraError("vera_core writes safetensors only (a pickle would run code when loaded); leave "
                            "safe_serialization=True.")
        if selected_adapters not in (None, [], [DEFAULT_ADAPTER]):
            raise VeraError(f"selected_adapters={selected_adapters!r}: a VeraModel holds one adapter, "
                            f"{DEFAULT_ADAPTER!r}; leave it out (one VeraModel per adapter saves each).")
        if save_embedding_layers not in ("auto", False):
            raise VeraError(f"save_embedding_layers={save_embedding_layers!r}: VeRA trains no embedding layer, so "
                            "there is none to save; leave it out.")
        if kwargs:
            raise TypeError(f"save_pretrained() takes no {', '.join(sorted(kwargs))} in vera_core (PEFT's other "
                            "keywords are for its other adapter kinds and its Hub upload).")
        if is_main_process:
            save_adapter(self, save_directory, save_projection=save_projection)

    def unload(self) -> nn.Module:
        """The base model without the VeRA layers and without merging them (PEFT's ``unload``); the trained heads
        and biases stay in, as with ``merge_and_unload``."""
        self._refuse_inside_disable("unload()")
        for name, layer in list(self.named_vera_layers()):
            layer.unmerge()
            _set_submodule(self.model, name, layer.base_layer)
        return self.model

    def vera_layers(self) -> Iterator[VeraLinear]:
        for module in self.model.modules():
            if isinstance(module, VeraLinear):
                yield module

    def named_vera_layers(self) -> Iterator[tuple[str, VeraLinear]]:
        for name, module in self.model.named_modules():
            if isinstance(module, VeraLinear):
                yield name, module

    def modules_to_save(self) -> Iterator[tuple[str, nn.Module]]:
        """Top-most modules named by ``modules_to_save``."""
        if not self.config.modules_to_save:
            return
        taken: list[str] = []
        for name, module in self.model.named_modules():
            if not name or any(name.startswith(t + ".") for t in taken):
                continue
            if any(name == m or name.endswith("." + m) for m in self.config.modules_to_save):
                taken.append(name)
                yield name, module

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def num_adapter_parameters(self) -> int:
        """Only the VeRA vectors d and b (the figure the paper reports)."""
        return sum(layer.r + layer.out_features for layer in self.vera_layers())

    def projection_fingerprint(self) -> str:
        return fingerprint(self.projection.vera_A, self.projection.vera_B)

    def set_strategy(self, strategy: ComputeStrategy) -> None:
        for layer in self.vera_layers():
            layer.strategy = strategy

    # ---- merge -------------------------------------------------------------------------------------------
    def merge(self, *, safe_merge: bool = False) -> None:
        """Fold every delta into its base weight. ``safe_merge`` (PEFT's): every layer's merged weight is computed
        and checked first, and one that would hold NaN or infinity is a ValueError naming it, with no layer merged
        (PEFT's leaves the layers before it merged)."""
        if safe_merge and (broken := next((n for n, layer in self.named_vera_layers() if not layer.merges_finite()),
                                          None)):
            raise ValueError(f"{broken}: the merged weight would hold NaN or infinity (the adapter's vectors are "
                             "broken, or the delta too large for the weight's dtype). No layer was merged.")
        for layer in self.vera_layers():
            layer.merge()

    def unmerge(self) -> None:
        for layer in self.vera_layers():
            layer.unmerge()

    def merge_adapter(self, adapter_names: list[str] | None = None, *, safe_merge: bool = False) -> None:
        """PEFT's name for ``merge()``."""
        _one_adapter(adapter_names)
        self.merge(safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        """PEFT's name for ``unmerge()``."""
        self.unmerge()

    def _refuse_inside_disable(self, what: str) -> None:
        if self._disabled_depth:
            raise VeraError(
                f"{what} was called inside disable_adapter(), where the model holds the base model's original heads "
                "and biases instead of the trained ones; call it after the block."
            )

    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False,
                         adapter_names: list[str] | None = None) -> nn.Module:
        """Fold every delta into its base weight and return the plain base model (trained heads and biases in).
        PEFT's arguments: ``safe_merge`` checks every merged weight before any is changed (merge), ``progressbar``
        shows one over the layers (tqdm), ``adapter_names`` may name the one adapter, "default"."""
        self._refuse_inside_disable("merge_and_unload()")
        _one_adapter(adapter_names)
        self.merge(safe_merge=safe_merge)
        layers: Iterable[tuple[str, VeraLinear]] = list(self.named_vera_layers())
        if progressbar:
            from tqdm.auto import tqdm

            layers = tqdm(layers, desc="Unloading and merging model")  # (PEFT's words)
        for name, layer in layers:
            _set_submodule(self.model, name, layer.base_layer)
        return self.model

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Inside the block the model is the base model alone, as it was before the adapter was added.

        The VeRA layers pass through to their base layers (merged deltas are taken out first, which is exact up to
        float rounding), and the original heads (``modules_to_save``) and biases (``bias="all"`` / ``"vera_only"``)
        are swapped into the tree in place of the trained ones; these come back on exit, also on an exception.
        PEFT's ``disable_adapter()`` does the same for heads but leaves trained biases in place. Nested blocks are
        fine; reading, saving or loading the adapter's tensors and ``merge_and_unload()`` inside one are refused.
        """
        layers = list(self.vera_layers())
        previous = [layer.disabled for layer in layers]
        for layer in layers:
            layer.unmerge()
            layer.disabled = True
        if self._disabled_depth == 0:
            self._swap_originals()
        self._disabled_depth += 1
        try:
            yield
        finally:
            self._disabled_depth -= 1
            if self._disabled_depth == 0:
                self._swap_originals()
            for layer, disabled in zip(layers, previous, strict=True):
                layer.disabled = disabled

    # ---- state in PEFT's key format -----------------------------------------------------------------------
    def _adapter_tensors(self, *, keep_projection: bool) -> dict[str, torch.Tensor]:
        """The live tensors an adapter file holds, under PEFT's keys (no copies)."""
        self._refuse_inside_disable("Reading or loading the adapter's tensors")
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.named_vera_layers():
            out[f"{PEFT_PREFIX}{name}.vera_lambda_b"] = layer.vera_lambda_b
            out[f"{PEFT_PREFIX}{name}.vera_lambda_d"] = layer.vera_lambda_d
            if self.config.bias == "vera_only" and layer.base_bias is not None:
                out[f"{PEFT_PREFIX}{name}.base_layer.bias"] = layer.base_bias
        if self.config.bias == "all":
            for name, p in self.model.named_parameters():
                if name.endswith("bias"):
                    out[f"{PEFT_PREFIX}{name}"] = p
        for name, module in self.modules_to_save():
            for pname, p in module.state_dict().items():
                out[f"{PEFT_PREFIX}{name}.{pname}"] = p
        if keep_projection:
            out[PROJECTION_KEYS[0]] = self.projection.vera_A
            out[PROJECTION_KEYS[1]] = self.projection.vera_B
        return out

    def adapter_state_dict(self, *, save_projection: bool | None = None) -> dict[str, torch.Tensor]:
        """Tensors as PEFT saves them in adapter_model.safetensors (float32 vectors, full heads). Refused for a model
        that FSDP has sharded, whose tensors are pieces (vera_core.distributed.refuse_sharded)."""
        refuse_sharded(self, "Saving the adapter (adapter_state_dict)")
        keep = self.config.save_projection if save_projection is None else save_projection
        return {k: v.detach().to("cpu").contiguous() for k, v in self._adapter_tensors(keep_projection=keep).items()}

    def peft_extras(self, tensors: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(the adapter's own tensors, base weights) of what PEFT saved, as PEFT's loader reads it: the base weight
        of a targeted ``lm_head`` / ``embed_tokens`` (saved with save_embedding_layers) is a base weight to load;
        with bias="all", PEFT also saves a head's biases under its wrapper's keys, the trained copy
        (``<head>.modules_to_save.default.<...>``, the same tensor as the head's own key) and the frozen original
        (``<head>.original_module.<...>``, the base's own): both are left out."""
        layers = {name for name, _ in self.named_vera_layers() if name.rpartition(".")[2] in EMBEDDING_LAYER_NAMES}
        adapter: dict[str, torch.Tensor] = {}
        base: dict[str, torch.Tensor] = {}
        for key, tensor in tensors.items():
            if ".original_module." in key:
                continue
            if _WRAPPED_COPY in key:
                plain = _unwrapped(key, tensors)
                if plain in tensors:
                    continue
                key = plain
            if key.endswith(BASE_WEIGHT) and module_path(key, BASE_WEIGHT) in layers:
                base[key] = tensor
            else:
                adapter[key] = tensor
        return adapter, base

    def base_weight_at(self, key: str) -> torch.Tensor:
        """The base weight a PEFT key ``<prefix><layer>.base_layer.weight`` of an adapted layer names."""
        layer = self.model.get_submodule(module_path(key, BASE_WEIGHT))
        assert isinstance(layer, VeraLinear), key  # peft_extras keeps only keys of adapted layers
        return layer.base_weight

    def _base_weight_mismatch(self, base: dict[str, torch.Tensor]) -> str | None:
        for key, tensor in sorted(base.items()):
            weight = self.base_weight_at(key)
            if tuple(tensor.shape) != tuple(weight.shape):
                return (f"it stores the base weight {key!r} (PEFT's save_embedding_layers) with shape "
                        f"{tuple(tensor.shape)} but this model's is {tuple(weight.shape)}: resize the base model's "
                        "embeddings to the adapter's vocabulary first (resize_token_embeddings); ")
        return None

    def adapter_mismatch(self, tensors: dict[str, torch.Tensor]) -> str | None:
        """Why ``tensors`` (PEFT keys, projections ignored) do not fit this model's adapter, or None if they do."""
        tensors, base = self.peft_extras(tensors)
        if (problem := self._base_weight_mismatch(base)) is not None:
            return problem
        expected = self._adapter_tensors(keep_projection=False)
        present = set(tensors) - set(PROJECTION_KEYS)
        missing, unexpected = sorted(set(expected) - present), sorted(present - set(expected))
        if missing or unexpected:
            return ((f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}; " if missing else "")
                    + (f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; " if unexpected else ""))
        for key in sorted(present):
            if tuple(tensors[key].shape) != tuple(expected[key].shape):
                return (f"tensor {key!r} has shape {tuple(tensors[key].shape)} but this model expects "
                        f"{tuple(expected[key].shape)}; ")
        return None

    def load_adapter_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load vectors, biases and heads from PEFT-format keys; every expected key must be there, and no other
        (beyond what ``peft_extras`` reads: a targeted embedding layer's base weight is loaded into the base model).

        Everything is checked before anything is copied, so a refused adapter leaves the model as it was.
        """
        problem = self.adapter_mismatch(tensors)
        if problem is not None:
            raise AdapterFormatError(
                f"The adapter's tensors do not fit this model: {problem}check that target_modules, modules_to_save "
                "and bias match the base model it was trained on, and the rank."
            )
        tensors, base = self.peft_extras(tensors)
        targets = self._adapter_tensors(keep_projection=False)
        with torch.no_grad():
            for key, target in targets.items():
                target.copy_(tensors[key].to(target.dtype))
            for key, tensor in base.items():  # into the base model, as PEFT's loader does
                weight = self.base_weight_at(key)
                weight.copy_(tensor.to(weight.dtype))

