"""Thin shim: `python cli.py ...` behaves exactly like the `rmsd` console script."""

from rmsd.cli import main

if __name__ == "__main__":
    main()
