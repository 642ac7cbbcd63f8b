"""Regular expressions that come from adapter configs (``target_modules`` as a string, ``layers_pattern``), matched
as PEFT matches them, but in time linear in the name: a config is data that registries, model servers and workers
read from strangers, and Python's backtracking engine takes exponential time on patterns such as ``(a+)+b``, holding
the interpreter the whole while (one 1.6 KB adapter froze a registry's API for the length of its publish).

With google-re2 installed (a dependency of vera-registry) every such pattern RE2 reads is matched by RE2, which
never backtracks. RE2 reads the same syntax for what configs use (names, alternation, classes, repeats, anchors,
named groups), with the same full-match and match semantics. A pattern that needs backtracking (lookaround,
backreferences, possessive repeats, ``\\Z``) is refused where a server takes configs from callers (``require_linear``:
publish, job submission), with a message saying what to write instead; elsewhere (a config of one's own, or one
accepted before that check) Python's ``re`` matches it, as PEFT does, and so it does everywhere without google-re2.
Either way a pattern is at most MAX_PATTERN_LENGTH characters.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Protocol

from vera_core.errors import VeraConfigError

try:
    import re2
except ImportError:  # vera_core without vera-registry's dependencies: Python's re, as PEFT
    re2 = None

#: The longest pattern a config may hold (PEFT's own are tens of characters).
MAX_PATTERN_LENGTH = 1000
#: RE2's memory budget per compiled pattern (its default is 8 MiB); a pattern over it is refused.
RE2_MAX_MEM = 8 << 20


class Pattern(Protocol):
    def fullmatch(self, text: str) -> Any: ...

    def match(self, text: str) -> Any: ...


def linear_time() -> bool:
    """Whether config patterns are matched by RE2 (in linear time) on this installation."""
    return re2 is not None


@functools.lru_cache(maxsize=256)
def compile_pattern(text: str, what: str = "target_modules", *, strict: bool = False, around: int = 0) -> Pattern:
    """``text`` compiled, by RE2 when installed; VeraConfigError naming ``what`` when it is too long or invalid. A
    pattern RE2 cannot match (it needs backtracking) is compiled by Python's ``re``, as PEFT does, so that configs
    written before keep loading; with ``strict`` (what a server accepts from callers: ``require_linear``) it is
    refused instead. ``around``: how many of the characters are the caller's own around the text it was given (the
    limit is on the given text's)."""
    if len(text) - around > MAX_PATTERN_LENGTH:
        raise VeraConfigError(f"{what} is a regular expression of {len(text) - around:,} characters; the limit is "
                              f"{MAX_PATTERN_LENGTH:,}. Pass a list of module names instead.")
    try:
        compiled: Pattern = re.compile(text)  # Python's syntax first: what PEFT accepts
    except (re.error, RecursionError, OverflowError) as exc:
        raise VeraConfigError(f"{what} is a string, so it must be a regular expression; {text[:200]!r} is not "
                              f"valid ({exc}). Pass a list of names to match by suffix instead.") from None
    if re2 is None:
        return compiled
    options = re2.Options()
    options.log_errors, options.max_mem = False, RE2_MAX_MEM
    try:
        linear: Pattern = re2.compile(text, options)
    except re2.error as exc:
        if not strict:
            return compiled
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise VeraConfigError(
            f"{what} {text[:200]!r} needs a backtracking regular expression engine ({reason}): lookarounds, "
            "backreferences, possessive or atomic groups and \\Z are refused here, so that no pattern can take "
            "exponential time on a server matching it. Rewrite it without them (\\z for the end, or nothing: the "
            "whole name is matched), or pass a list of module names.") from None
    return linear


def list_entry(targets: list[str], name: str) -> str | None:
    """The entry of a target_modules list that names the module ``name``, as PEFT matches a list: the whole name, or
    its end after a '.' (``dense``: ``bert.pooler.dense`` too); None when no entry does."""
    return next((t for t in targets if name == t or name.endswith(f".{t}")), None)


def require_linear(target_modules: object, layers_pattern: object = None) -> None:
    """VeraConfigError unless every pattern of a config (``target_modules`` as a string, ``layers_pattern``) is
    matched in linear time: what a registry, a model server or a worker accepts from a caller. (A config read back
    from what was accepted before this check existed still loads: ``compile_pattern`` falls back to ``re``.)"""
    if re2 is None:
        return
    if isinstance(target_modules, str):
        compile_pattern(target_modules, strict=True)
    patterns = [layers_pattern] if isinstance(layers_pattern, str) else \
        list(layers_pattern) if isinstance(layers_pattern, list | tuple) else []
    for pattern in patterns:
        layer_index_pattern(pattern, strict=True)


def not_a_layers_pattern(value: object) -> VeraConfigError:
    """The error for a ``layers_pattern`` (or one of a list's) that is not a string."""
    return VeraConfigError(f"layers_pattern must be a string or a list of strings, got {value!r:.100}.")


def layer_index_pattern(layers_pattern: object = None, *, strict: bool = False) -> Pattern:
    """PEFT's pattern for a layer's index: the number after ``layers_pattern`` in a module's name (after its second
    name when None), as group ``idx``; ``strict`` as for compile_pattern."""
    if layers_pattern is None:
        return compile_pattern(r".*?\.[^.]*\.(?P<idx>\d+)\.", "layers_pattern", strict=strict)
    if not isinstance(layers_pattern, str):
        raise not_a_layers_pattern(layers_pattern)
    wrapped = rf"(?:^|.*?\.){layers_pattern}\.(?P<idx>\d+)\."
    # the limit on the pattern as written (the wrapper's 27 characters were counted in: a docs audit, session 54)
    return compile_pattern(wrapped, "layers_pattern", strict=strict, around=len(wrapped) - len(layers_pattern))
