"""Progress with an ETA for the long benchmarks and soaks (tqdm, from the ``bench`` extra).

Bars go to stderr, the tables to stdout, so ``> results.md`` keeps only the tables. On a terminal
a bar redraws twice a second; in a log file it writes a line every 30 seconds.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: float | None = None, desc: str = "", unit: str = "run", iterable=None) -> tqdm:
    """A progress bar over ``total`` units (or over ``iterable``), with elapsed time and ETA."""
    tty = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.5 if tty else 30.0,
        dynamic_ncols=True,
        smoothing=0.05,
        leave=tty,
    )


def say(*parts: object) -> None:
    """Print a result line to stdout without tearing a bar on the terminal."""
    tqdm.write(" ".join(str(p) for p in parts), file=sys.stdout)
    sys.stdout.flush()
