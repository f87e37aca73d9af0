"""N learners keeping one model by parameter rounds, against one learner seeing every event.

    nice -n 19 .venv/bin/python bench/distributed.py --events 20000
    .venv/bin/python bench/distributed.py --events 20000 --learners 2,4 --every 1,4,16 --streams SEA
    .venv/bin/python bench/distributed.py --events 20000 --outer sum   # DiLoCo-style outer step

On bench/quality.py's seven streams, in one process with the arithmetic of the real group
(daemon/learning/parameter_round.py through the in-process peers of adapters/fakes.py, one
thread per learner): the stream's micro-batches are dealt round-robin to N learners (batch
``b`` to learner ``b mod N``, as partitions assigned from the rank would split a stream), each
learns its own share test-then-train through its own ``Pipeline.learn_arrays`` (guards,
rehearsal, drift detection, challenger: the daemon's learning path), and every ``K`` of its
batches the group runs a round; a learner's drift alarm is noted and reacted to by all at the
round. Prequential accuracy is over all events, each predicted by the learner it was dealt to,
against one learner (the same path) seeing all events in order.

Then the cost of a round: the float64 values and bytes each learner sends per round (both
reductions), the time gloo takes for them between 2 real processes on loopback (measured:
bench/_allreduce.py), and what that does to a learner's events/s at each K (the learner's own
rate measured on the one-learner run).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _progress import bar  # noqa: E402
from _streams import streams  # noqa: E402
from quality import _learnd, run_learnd_errors  # noqa: E402

# parameter rounds average one network: no linear member beside the MLP (one learner alike)
ONE_NETWORK = {"linear_member": {"enabled": False}}

from learnd.adapters.fakes import InProcessGroup  # noqa: E402
from learnd.daemon.learning.parameter_round import ParameterRound  # noqa: E402
from learnd.daemon.learning.state_vector import layout  # noqa: E402


def run_group(X, y, labels, n, every, outer_lr=1.0):
    """Per-event errors of ``n`` learners dealt batches round-robin, a round every ``every`` of
    each one's batches (the weights moved by ``outer_lr`` times the mean change); and the values
    each sends per round."""
    group = InProcessGroup(n, timeout_s=600)
    members = []
    for rank in range(n):
        cfg, pipe, yy, errors = _learnd(X, y, labels, learning=ONE_NETWORK)
        lrn = pipe.learner
        rnd = ParameterRound(lrn, group.member(rank), every, lrn.on_drift, outer_lr)
        lrn.on_drift = rnd.note_alarm  # type: ignore[method-assign]  # reacted to at the round
        members.append((pipe, rnd, errors))
    b = cfg.learning.batch_size
    starts = list(range(0, len(y), b))
    per_round = n * every
    out = np.full(len(y), np.nan)
    values = 0

    def share(rank: int, chunk: list[int]) -> int:
        pipe, rnd, errors = members[rank]
        mine = chunk[rank::n]
        for s in mine:
            pipe.learn_arrays(X[s : s + b], yy[s : s + b])
        for s, e in zip(mine, errors[-len(mine) :] if mine else [], strict=True):
            out[s : s + len(e)] = e
        return rnd.run().values

    with ThreadPoolExecutor(n) as pool:
        for r in range(0, len(starts), per_round):
            chunk = starts[r : r + per_round]
            values = max(pool.map(share, range(n), [chunk] * n))
    assert not np.isnan(out).any()
    return out, values


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_round_seconds(pairs, reps):
    """Median and p90 seconds of a round's two reductions between 2 processes, per pair."""
    port = _free_port()
    args = [str(port), str(reps), *(f"{a},{b}" for a, b in pairs)]
    worker = str(ROOT / "bench" / "_allreduce.py")
    procs = [
        subprocess.Popen([sys.executable, worker, str(r), *args], stdout=subprocess.PIPE)
        for r in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("the gloo timing processes failed")
    return {tuple(int(v) for v in k.split(",")): v for k, v in json.loads(outs[0]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="per synthetic stream")
    ap.add_argument("--learners", default="2,4")
    ap.add_argument("--every", default="1,4,16", help="K: batches per learner between rounds")
    ap.add_argument("--streams", default="", help="names' prefixes, comma-separated")
    ap.add_argument("--reps", type=int, default=300, help="gloo rounds timed per size")
    ap.add_argument(
        "--outer",
        choices=("mean", "sum"),
        default="mean",
        help="the weights after a round: the learners' mean (outer_lr 1), or the last round's"
        " plus the sum of their changes (outer_lr N)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    ns = [int(v) for v in args.learners.split(",")]
    ks = [int(v) for v in args.every.split(",")]
    data = streams(args.events, False, tuple(s for s in args.streams.split(",") if s))
    configs = [(n, k) for n in ns for k in ks]
    progress = bar(len(data) * (1 + len(configs)), "runs")
    rows, sizes, rates = [], {}, {}
    t_all = time.perf_counter()
    for name, X, y, labels, _switches in data:
        dt, errors, _ = run_learnd_errors(X, y, labels, learning=ONE_NETWORK)
        progress.update()
        one = float((errors == 0).mean())
        rates[name] = len(y) / dt
        cells = []
        for n, k in configs:
            errs, values = run_group(X, y, labels, n, k, 1.0 if args.outer == "mean" else n)
            progress.update()
            cells.append(float((errs == 0).mean()) - one)
            sizes[name] = values
        rows.append((name, len(y), one, cells))
    progress.close()
    print(
        f"\nPrequential accuracy, N learners (round-robin batches, a round every K of each one's"
        f" batches, weights after a round: {args.outer})\nagainst one learner seeing all events:"
        " points of difference"
        f" ({time.perf_counter() - t_all:.0f} s)\n"
    )
    head = " | ".join(f"N={n} K={k}" for n, k in configs)
    print(f"| stream | events | one learner | {head} |")
    print("|---|---|---|" + "---|" * len(configs))
    for name, m, one, cells in rows:
        diffs = " | ".join(f"{100 * c:+.2f}" for c in cells)
        print(f"| {name} | {m:,} | {one:.4f} | {diffs} |")
    means = [100 * np.mean([r[3][i] for r in rows]) for i in range(len(configs))]
    print("| mean | | | " + " | ".join(f"{v:+.2f}" for v in means) + " |")
    pairs = {}
    for name, X, y, labels, _ in data:
        lay = layout(_learnd(X, y, labels, learning=ONE_NETWORK)[1].learner)
        small = 1 + (1 + lay.x_dim) + 2
        pairs[name] = (small, sizes[name] - small)
    timed = gloo_round_seconds(sorted(set(pairs.values())), args.reps)
    print(
        f"\nCost of a round: values (float64) each learner sends, gloo between 2 processes on"
        f" loopback\n(two all_reduce calls, median and p90 of {args.reps}), and a learner's"
        f" events/s alone and with a round every K batches (of 32)\n"
    )
    print(
        "| stream | values | bytes | gloo median | gloo p90 | events/s alone | "
        + " | ".join(f"K={k}" for k in ks)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(ks))
    for name, *_ in data:
        med, p90 = timed[pairs[name]]
        r = rates[name]
        with_rounds = " | ".join(f"{1 / (1 / r + med / (32 * k)):,.0f}" for k in ks)
        total = sum(pairs[name])
        print(
            f"| {name} | {total:,} | {8 * total:,} | {1e6 * med:.0f} us | {1e6 * p90:.0f} us"
            f" | {r:,.0f} | {with_rounds} |"
        )


if __name__ == "__main__":
    main()
