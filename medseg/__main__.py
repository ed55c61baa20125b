"""``python -m medseg`` (and ``torchrun -m medseg``) run the CLI."""

from medseg.cli import main

if __name__ == "__main__":
    main()
