"""`python -m refine ...`: the `refine` command, for launchers that take a module (`accelerate launch -m refine compare CONFIG`, `torchrun -m refine ...`).

Example:
    >>> import refine.__main__ as entry       # what `python -m refine` runs (the console script's `main`)
    >>> entry.main.__module__
    'refine.cli'
"""

from refine.cli import main

if __name__ == "__main__":
    main()
