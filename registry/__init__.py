"""registry: the VeRA adapter registry service (settings, storage, API, CLI). The `vera` command lives here."""
