"""`python -m rmsd ...` behaves exactly like the `rmsd` console script (where the script is not on PATH)."""

from rmsd.cli import main

if __name__ == "__main__":
    main()
