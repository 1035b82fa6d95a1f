"""`python -m moderator` runs the CLI."""

from moderator.cli import main

main()
