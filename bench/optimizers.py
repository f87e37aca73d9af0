"""Optimizers with fewer knobs, from well-kept libraries, against learnd's default learning.

    .venv/bin/pip install -e ".[bench]"          # prodigyopt, dadaptation, schedulefree
    .venv/bin/python bench/optimizers.py         # 3 model seeds, keeping up and behind (~7 min)
    .venv/bin/python bench/optimizers.py --seeds 1 --streams Phishing,Hyperplane

learnd's default is Adam at a fixed base rate (0.01) that a drift alarm multiplies by 3 and
that decays back (daemon/learning/schedules.py), with the weights averaged for prediction
(daemon/learning/averaging.py). The methods here set their step size themselves (Prodigy and
D-Adaptation: the rate is a multiplier, 1) or need no schedule (schedule-free AdamW and RAdam).
Each runs in place of Adam inside learnd's own learning path (``Pipeline.learn_arrays``:
rehearsal while keeping up, drift detection, the drift boost on the multiplier, the challenger,
which gets the same optimizer), on bench/quality.py's seven streams, keeping up and behind the
log. Printed: mean prequential accuracy over the model seeds and examples/s per stream.

Schedule-free methods train one sequence of weights and are meant to be evaluated at another
(what their ``eval()`` swaps in). Here the learner's weight average is replaced by that point, so
every prediction comes from it; they keep their own averaging and learnd's is off for them.

The optimizer goes in by replacing ``learnd.daemon.learning.learner._make_optimizer`` for the
run: the daemon offers only torch's optimizers (``learning.optimizer``), and none of these beat
its default (docs/benchmarks.md, "Optimizers"; docs/design.md, "Optimizer"). Progress and an ETA
go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import quality  # noqa: E402
import torch  # noqa: E402
from _progress import bar, say  # noqa: E402
from _streams import streams  # noqa: E402

from learnd.daemon.learning import learner as learner_module  # noqa: E402
from learnd.daemon.learning.model import views_like  # noqa: E402


class ScheduleFreePoint:
    """Stands in for the learner's :class:`~learnd.daemon.learning.averaging.WeightAverage`: what it holds is
    the point a schedule-free optimizer evaluates at, ``lerp(y, z, 1 - 1/beta1)`` per parameter
    (its ``eval()``), written into the same buffers, so the learner predicts with it."""

    enabled = True

    def __init__(self, average, optimizer):
        self.buffer, self.now = average.buffer, average.now
        self.optimizer = optimizer
        self.params = optimizer.param_groups[0]["params"]
        self._buffer_views = views_like(self.buffer, self.params)
        self._now_views = views_like(self.now, self.params)

    @torch.no_grad()
    def _eval_point(self, views: list[torch.Tensor]) -> None:
        beta1 = self.optimizer.param_groups[0]["betas"][0]
        for p, view in zip(self.params, views, strict=True):
            z = self.optimizer.state[p].get("z")
            if z is None:
                view.copy_(p)
            else:
                torch.lerp(p, z, 1 - 1 / beta1, out=view)

    def fold(self, weights):
        self._eval_point(self._buffer_views)

    def current(self, weights):
        self._eval_point(self._now_views)
        return self.now

    def reset(self, weights):
        self._eval_point(self._buffer_views)

    def state_dict(self):
        return None

    def load_state_dict(self, state, weights):
        self._eval_point(self._buffer_views)


def _library_optimizer(kind: str):
    import dadaptation
    import prodigyopt
    import schedulefree

    def make(name, params, lr, weight_decay, device):
        if kind == "prodigy":
            return prodigyopt.Prodigy(params, lr=lr, weight_decay=weight_decay)
        if kind == "dadapt":
            return dadaptation.DAdaptAdam(params, lr=lr, weight_decay=weight_decay)
        cls = (
            schedulefree.AdamWScheduleFree if kind == "sf-adamw" else schedulefree.RAdamScheduleFree
        )
        opt = cls(params, lr=lr, weight_decay=weight_decay)
        opt.train()  # train mode for good: the learner predicts at the eval point instead
        return opt

    return make


@contextlib.contextmanager
def optimizer(kind: str | None):
    """learnd's learners (the challenger's included) built with ``kind``'s optimizer."""
    if kind is None:
        yield
        return
    make_before, init_before = learner_module._make_optimizer, learner_module.Learner.__init__
    learner_module._make_optimizer = _library_optimizer(kind)
    if kind.startswith("sf-"):

        def init(self, *args, **kwargs):
            init_before(self, *args, **kwargs)
            self.average = ScheduleFreePoint(self.average, self.optimizer)

        learner_module.Learner.__init__ = init
    try:
        yield
    finally:
        learner_module._make_optimizer = make_before
        learner_module.Learner.__init__ = init_before


# (label, library optimizer or None for torch's, learning.* overrides)
METHODS = [
    ("learnd default: Adam, lr 0.01, drift boost, averaging", None, {}),
    ("Adagrad (torch), lr 0.01", None, {"optimizer": "adagrad"}),
    ("Prodigy (prodigyopt), lr 1", "prodigy", {"lr": 1.0}),
    ("Prodigy, no weight averaging", "prodigy", {"lr": 1.0, "average_decay": 0.0}),
    ("D-Adaptation Adam (dadaptation), lr 1", "dadapt", {"lr": 1.0}),
    ("schedule-free AdamW (schedulefree), lr 0.01", "sf-adamw", {"average_decay": 0.0}),
    (
        "schedule-free AdamW, its default lr 0.0025",
        "sf-adamw",
        {"lr": 0.0025, "average_decay": 0.0},
    ),
    ("schedule-free RAdam, lr 0.01", "sf-radam", {"average_decay": 0.0}),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, default=3, help="model seeds 0..K-1 (default 3)")
    ap.add_argument("--streams", default="", help="only these streams (prefixes, comma-separated)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    only = tuple(s for s in args.streams.split(",") if s)
    data = streams(args.events, False, only)
    seeds = range(args.seeds)
    print(
        f"Mean prequential accuracy over model seeds 0..{args.seeds - 1} / examples per s;"
        f" synthetic streams {args.events:,} events\n"
    )
    progress = bar(2 * len(METHODS) * len(data) * args.seeds, "optimizer runs")
    for behind in (False, True):
        say(f"learnd {'behind the log (no rehearsal)' if behind else 'keeping up (rehearsing)'}\n")
        say("| method | " + " | ".join(name for name, *_ in data) + " |")
        say("|---|" + "---|" * len(data))
        for label, kind, learning in METHODS:
            cells = []
            with optimizer(kind):
                for _, X, y, labels, _ in data:
                    accs, times = [], []
                    for seed in seeds:
                        dt, correct, _ = quality.run_learnd_recorded(
                            X, y, labels, behind, seed, learning
                        )
                        times.append(dt)
                        accs.append(correct.mean())
                        progress.update()
                    cells.append(
                        f"{np.mean(accs):.4f} / {len(y) * len(times) / sum(times) / 1e3:.0f}k"
                    )
            say(f"| {label} | " + " | ".join(cells) + " |")
        say()
    progress.close()


if __name__ == "__main__":
    main()
