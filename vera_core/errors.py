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

Every message says what was expected, what was found, and how to fix it.
"""

from __future__ import annotations

import json
import math
from typing import Any


class VeraError(Exception):
    """Base class of every error vera_core raises on purpose."""


class VeraConfigError(VeraError, ValueError):
    """A configuration value is invalid."""


class TargetError(VeraError, ValueError):
    """``target_modules`` matched nothing, or matched a layer type VeRA cannot adapt."""


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


class NonFiniteLossError(VeraError, FloatingPointError):
    """Training produced a NaN or infinite loss or gradient; the message names the step and the first layer
    (vera_core.numerics finds it)."""


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
    served back as JSON (a metric of 10**400, a config's d_initial of Infinity)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
