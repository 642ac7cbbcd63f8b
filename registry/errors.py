"""The registry's exception tree, documented in one place (mapped to HTTP statuses at the API edge).

    RegistryError                 base of everything the registry raises on purpose
    ├── InvalidInput              the request is malformed or the adapter fails validation      (422)
    │   └── ContentTooLarge       an upload over the size limit                                 (413)
    ├── NotFound                  no such adapter, version, alias, base model or blob          (404)
    ├── Conflict                  the request contradicts what is stored (shapes, duplicates)  (409)
    ├── IntegrityError            stored bytes do not match their hash; never served           (500, logged)
    └── SchemaOutOfDate           the database needs `vera db upgrade`                          (503)

The API adds Unauthorized (401) and Forbidden (403) in registry/tokens.py.
Messages say what was expected, what was found, and how to fix it.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""

    code = "registry_error"


class InvalidInput(RegistryError, ValueError):
    code = "invalid_input"


class ContentTooLarge(InvalidInput):
    code = "content_too_large"


class NotFound(RegistryError, LookupError):
    code = "not_found"


class Conflict(RegistryError):
    code = "conflict"


class IntegrityError(RegistryError):
    code = "integrity_error"


class SchemaOutOfDate(RegistryError):
    code = "schema_out_of_date"
