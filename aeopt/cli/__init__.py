"""The command line (all argparse code): `aeopt.cli.main` is the entry point."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
