"""Serving many registry adapters on one base model: the model server (server.py) and its HTTP API (api.py).
They reach the registry only through its HTTP client, never its database."""
