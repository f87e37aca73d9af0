"""A backlog learned end to end: the stream already in the topic when learnd starts (a new
deployment on a topic with history, a restart after an outage), against the same stream fed live.

    nice .venv/bin/python bench/backlog.py                      # 100k events, default config
    nice .venv/bin/python bench/backlog.py --catch-up-s 3,30    # one run per value

Fills a topic (embedded tansu, one partition) with the drifting SEA stream (bench/e2e.py's),
starts the daemon on it (default config, the consumer process), and measures events/s from the
first learned to the last and the prequential accuracy over the whole backlog, with the share of
events learned at each batch size and with rehearsal. "Live" is the same stream learned as
when the daemon keeps up (``Pipeline.learn_arrays`` in batches of 32, each followed by its
rehearsal steps, as bench/quality.py's "keeping up").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from e2e import fill  # noqa: E402

from learnd.adapters.bootstrap import Daemon  # noqa: E402
from learnd.adapters.fakes import ListDeadLetters, ManualClock  # noqa: E402
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from learnd.adapters.settings import build_config  # noqa: E402
from learnd.daemon.events.synthetic import DriftingSEA  # noqa: E402
from learnd.daemon.learning.learner import Learner  # noqa: E402
from learnd.daemon.pipeline import Pipeline  # noqa: E402


def _config(bootstrap, topic, tmp, learning):
    return build_config(
        environ={},
        defaults={
            "schema": {"task": "binary", "features": ["x1", "x2", "x3"]},
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "dead_letter_topic": topic + "-dlq",
                "group_id": f"backlog-{time.monotonic_ns()}",
                "auto_offset_reset": "earliest",
            },
            "learning": learning,
            "checkpoint": {"dir": str(tmp / f"ck-{time.monotonic_ns()}"), "every_s": 10},
            "serving": {"tcp_port": free_port()},
            "metrics": {"enabled": False},
        },
    )


def behind(bootstrap, topic, n, tmp, learning):
    d = Daemon(_config(bootstrap, topic, tmp, learning))
    errors, sizes, rehearsed = [], Counter(), Counter()
    learn_many = d.pipeline.learner.learn_many

    def recording(X, y):
        result = learn_many(X, y)
        errors.append(result.errors)
        sizes[len(y)] += len(y)
        rehearsed[d.pipeline.keeping_up] += len(y)
        return result

    d.pipeline.learner.learn_many = recording  # type: ignore[method-assign]
    d.start()
    d.run_in_thread()
    while d.pipeline.learner.events_learned == 0:
        time.sleep(0.001)
    t0, n0 = time.perf_counter(), d.pipeline.learner.events_learned
    while d.pipeline.learner.events_learned < n:
        time.sleep(0.01)
    rate = (n - n0) / (time.perf_counter() - t0)
    d.stop()
    d.join(60)
    acc = float((np.concatenate(errors) == 0).mean())
    return rate, acc, sizes, rehearsed[True] / max(1, sum(rehearsed.values()))


def live(n, learning, bootstrap, topic, tmp):
    cfg = _config(bootstrap, topic, tmp, learning)
    events = list(DriftingSEA(seed=7, switch_every=50_000).take(n))
    X = np.array([[e["features"][k] for k in ("x1", "x2", "x3")] for e in events], np.float32)
    y = np.array([e["label"] for e in events], np.float32)
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    pipe = Pipeline(cfg, learner, ListDeadLetters(), ManualClock())
    errors = []
    learn_many = learner.learn_many
    learner.learn_many = lambda Xb, yb: errors.append((r := learn_many(Xb, yb)).errors) or r
    for i in range(0, n, cfg.learning.batch_size):
        pipe.learn_arrays(X[i : i + cfg.learning.batch_size], y[i : i + cfg.learning.batch_size])
    return float((np.concatenate(errors) == 0).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--catch-up-s", default="", help="catch_up_s values (default: the default)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    values = [float(v) for v in args.catch_up_s.split(",") if v] or [None]
    tmp = Path(tempfile.mkdtemp(prefix="learnd-backlog-"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    try:
        topic = f"backlog-{time.monotonic_ns()}"
        fill(broker.bootstrap, topic, args.events, 1)
        ref = live(args.events, {}, broker.bootstrap, topic, tmp)
        print(f"{args.events:,} events of drifting SEA, one partition; live accuracy {ref:.4f}\n")
        print("| catch_up_s | events/s | accuracy | vs live | rehearsed | events per batch size |")
        print("|---|---|---|---|---|---|")
        for v in values:
            learning = {} if v is None else {"catch_up_s": v}
            rate, acc, sizes, share = behind(broker.bootstrap, topic, args.events, tmp, learning)
            by_size = ", ".join(
                f"{s}: {100 * c / sum(sizes.values()):.0f}%"
                for s, c in sorted(sizes.items())
                if c / sum(sizes.values()) >= 0.01
            )
            name = "default" if v is None else f"{v:g}"
            print(
                f"| {name} | {rate:,.0f} | {acc:.4f} | {100 * (acc - ref):+.2f} pt | "
                f"{100 * share:.0f}% | {by_size} |",
                flush=True,
            )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
