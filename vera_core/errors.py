"""The exception tree of vera_core, documented in one place.

    VeraError                     base of everything vera_core raises on purpose
    ├── VeraConfigError           a configuration value is invalid (also a ValueError)
    ├── TargetError               target_modules matched nothing, or matched an unsupported layer
    ├── UnknownGeneratorError     a projection generator name that this version does not know
    ├── AdapterFormatError        an adapter directory or file is malformed or inconsistent (also a ValueError)
    ├── ProjectionMismatchError   stored projections differ from what the seed regenerates
    ├── PeftIncompatibleError     the adapter cannot be read by HuggingFace PEFT as it stands
    ├── OutputFolderError         an adapter folder cannot be written where asked (also an OSError)
    └── NonFiniteLossError        training produced a NaN or infinite loss or gradient (also a FloatingPointError)

    JSONTextError                 JSON text from outside that parse_json cannot read (a ValueError, not a VeraError:
                                  the reader's callers raise their own error naming the text)

Every message says what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from typing import Any


class VeraError(Exception):
    """Base class of every error vera_core raises on purpose."""


class VeraConfigError(VeraError, ValueError):
    """A configuration value is invalid."""


class TargetError(VeraError, ValueError):
    """``target_modules`` matched nothing, or matched a layer type VeRA cannot adapt."""


class RoutingError(TargetError):
    """A mixed batch that does not fit its routing (AdapterBank): a number of adapter names other than the batch's
    rows, or a layer that has no adapter bank. A TargetError (and so a ValueError) for code that caught one here
    before 2026-12-07, when these were raised as TargetError."""


class UnknownGeneratorError(VeraError, ValueError):
    """A projection generator name that this version of vera_core does not implement."""


class AdapterFormatError(VeraError, ValueError):
    """An adapter directory or file is malformed, or inconsistent with its config or base model."""


class ProjectionMismatchError(VeraError):
    """Stored projections differ from the ones the recorded seed and generator regenerate."""


class PeftIncompatibleError(VeraError):
    """The adapter cannot be loaded correctly by HuggingFace PEFT as it stands."""


class OutputFolderError(VeraError, OSError):
    """An adapter folder cannot be written where it was asked for: the path is a file, or cannot be created."""


class JSONTextError(ValueError):
    """JSON text from outside that cannot be read (``parse_json``); its message completes a sentence that names the
    text: "is not JSON (...)", "is not UTF-8 text (...)", "holds an integer of over 4,300 digits", "nests too
    deeply (...)"."""


class NonFiniteLossError(VeraError, FloatingPointError):
    """Training produced a NaN or infinite loss or gradient; the message names the step and the first layer
    (vera_core.numerics finds it)."""


def parse_json(text: str | bytes, *, keys_once: bool = False) -> Any:
    """``json.loads`` for text a caller, a file or another server sent: every way it fails is one JSONTextError (a
    ValueError) saying why, for the caller to name the text and say what it expected. The one reader of untrusted
    JSON: ``json.loads`` alone raises RecursionError for nesting deeper than the parser goes (about a thousand
    levels), which code catching ValueError lets through as a crash (a 500 on a server), and a bare ValueError for
    an integer of more digits than Python converts (``sys.get_int_max_str_digits``). ``keys_once``: an object that
    gives a key twice is a JSONTextError too, not one of its values dropped unsaid (an adapter's config, a dataset's
    rows: a re-check's finding, session 44, as the registry refuses such request bodies)."""
    try:  # bytes: UTF-8 (RFC 8259), a leading byte-order mark allowed; json.loads alone would guess UTF-16 or -32
        decoded = text.decode("utf-8-sig") if isinstance(text, bytes) else text
        return json.loads(decoded, object_pairs_hook=each_key_once) if keys_once else json.loads(decoded)
    except KeyGivenTwice:
        raise
    except RecursionError:
        raise JSONTextError("nests too deeply (arrays or objects over about a thousand levels deep)") from None
    except UnicodeDecodeError as exc:
        raise JSONTextError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise JSONTextError(f"is not JSON ({exc})") from None
    except ValueError:
        raise JSONTextError(f"holds an integer of over {sys.get_int_max_str_digits():,} digits") from None


class KeyGivenTwice(JSONTextError):
    """An object of the JSON gives ``key`` more than once (parse_json with ``keys_once``, each_key_once)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"gives the key {key[:64]!r} more than once in an object")
        self.key = key


def each_key_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` that refuses an object giving a key twice (KeyGivenTwice: nested
    objects are read first, so the innermost such key is named), where json.loads keeps its last value unsaid."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise KeyGivenTwice(key)
        seen.add(key)
    return dict(pairs)


def not_unicode(value: Any) -> str | None:
    """The lone UTF-16 surrogate in a value read from JSON ("\\ud800" decodes to half of a pair, which no registry
    can store or answer with), or None: what the config and dataset readers refuse."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:  # the encoder reports a run of them as one: the first is said, not the run
        return str(exc.object[exc.start])
    return None


def finite_number(value: object) -> float | None:
    """``value`` as a finite float; None for a bool, a non-number, NaN, an infinity, or an int beyond a float's range
    (float() of one raises OverflowError): what a number read from a caller's JSON must be to be stored, compared or
    served back as JSON (a metric of 10**400, a config's d_initial of Infinity). numpy's scalars (a float32 from a
    sweep) are numbers too."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):  # numpy's scalars are Real, its bool is not
        return None
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def printable(text: str) -> str:
    """``text`` with every character that does not print (control characters, bidirectional overrides, line
    separators) written as Python writes it (``\\x1b``, ``\\u202e``), so that showing it never runs or reorders
    anything: for text from elsewhere put into a file or a message (a Hub's error, a layer's name)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
