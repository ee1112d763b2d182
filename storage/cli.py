"""The ``modelstorage`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from storage import __version__

    parser = argparse.ArgumentParser(prog="modelstorage")
    parser.add_argument("--version", action="version", version=f"modelstorage {__version__}")
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
