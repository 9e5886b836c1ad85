"""``python -m pgdr`` runs the CLI."""

from pgdr.cli.app import main

main()
