"""PNG plots of bench/quality.py's runs: rolling accuracy over the stream, drift switches and
learnd's drift alarms marked, learnd against the anchors. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

WINDOW = 1000  # events in the plotted rolling accuracy (less on streams under 20,000 events)

# learnd in blues, the anchors in other hues; behind the log dashed.
STYLE = {
    "learnd, keeping up": {"color": "#1f4e9c", "lw": 1.8, "zorder": 5},
    "learnd, behind": {"color": "#5b9bd5", "lw": 1.2, "ls": "--", "zorder": 4},
    "river LR": {"color": "#7f7f7f", "lw": 1.0},
    "river HATC": {"color": "#2ca02c", "lw": 1.0},
    "river ARF": {"color": "#e07b00", "lw": 1.4},
    "VW logistic": {"color": "#9467bd", "lw": 1.0},
}


def rolling(correct: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy over the last ``window`` events at each event from ``window`` on, and where."""
    csum = np.concatenate([[0], np.cumsum(correct, dtype=np.int64)])
    w = min(window, len(correct))
    acc = (csum[w:] - csum[:-w]) / w
    return np.arange(w, len(correct) + 1), acc


def slug(name: str) -> str:
    """A file name for a stream, its first word: ``Agrawal 0->2->5`` -> ``agrawal``."""
    return re.split(r"[^A-Za-z0-9]+", name.strip())[0].lower()


def plot_stream(
    out_dir: Path,
    name: str,
    switches: list[int],
    correct: dict[str, np.ndarray],
    alarms: list[int],
) -> Path:
    """One stream's figure: ``correct`` maps a system to its per-event correctness (prequential),
    ``alarms`` are learnd's (keeping up) drift alarms. Returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(next(iter(correct.values())))
    window = min(WINDOW, max(50, n // 20))
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    lows = []
    for system, corr in correct.items():
        x, acc = rolling(corr, window)
        lows.append(acc.min())
        ax.plot(x, acc, label=f"{system} ({corr.mean():.3f})", **STYLE.get(system, {"lw": 1.0}))
    for i, s in enumerate(switches):
        ax.axvline(s, color="black", ls=":", lw=1.0, label="concept switch" if i == 0 else None)
    bottom = max(0.0, min(lows) - 0.01)
    mark = 1.0 + 0.025 * (1.0 - bottom)  # above every curve: accuracy never exceeds 1
    if alarms:
        ax.plot(
            alarms,
            [mark] * len(alarms),
            "v",
            color=STYLE["learnd, keeping up"]["color"],
            ms=6,
            ls="none",
            label="learnd drift alarm",
            zorder=6,
            clip_on=False,
        )
    ax.set_ylim(bottom, 1.0 + 0.05 * (1.0 - bottom))
    ax.set_yticks([t for t in ax.get_yticks() if bottom <= t <= 1.0])
    ax.set_xlim(0, n)
    ax.set_xlabel("events")
    ax.set_ylabel(f"accuracy over the last {window:,} events")
    ax.set_title(f"{name} ({n:,} events): prequential accuracy, test-then-train")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(alpha=0.3)
    fig.legend(loc="lower center", fontsize=8, ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"quality-{slug(name)}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
