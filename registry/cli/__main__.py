"""`python -m registry.cli`: the `vera` command line."""

from registry.cli import main

main()
