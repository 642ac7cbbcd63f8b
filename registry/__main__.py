"""`python -m registry`: the `vera` command line."""

from registry.cli import main

main()
