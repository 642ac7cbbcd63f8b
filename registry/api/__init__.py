"""The HTTP API (FastAPI), versioned under /api/v1: ``create_app`` builds it over a Registry."""

from registry.api.app import create_app
from registry.api.deps import ApiOptions, is_loopback

__all__ = ["ApiOptions", "create_app", "is_loopback"]
