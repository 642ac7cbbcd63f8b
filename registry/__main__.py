"""`python -m registry`: the `vera` command line."""

from registry.cli import app

app(prog_name="vera")
