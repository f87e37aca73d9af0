"""What clients get: served accuracy against learned accuracy, asked over the socket live.

    .venv/bin/python bench/freshness.py                      # 9 streams x 5,000 and 50,000/s, burst
    .venv/bin/python bench/freshness.py --events 20000 --paces 5000 --streams SEA

For each stream of bench/quality.py, and two drifting regression streams (river's FriedmanDrift (Friedman, 1991)
with abrupt local and global drift: served MAE against learned MAE), and each pace, a fresh learnd (the daemon `learnd run`
starts, in a process of its own, with its consumer and serving processes) learns from an
embedded broker while this process produces the stream at the pace and, for a seeded sample of
events, asks the socket for the event's prediction just before producing it: what a client
really gets. The daemon records each batch's prequential errors (the learner's predictions
before it trained on them) and each version it publishes. Printed: served accuracy on the
sampled events against the learner's on the same events (and on all), the served model's lag
behind the learner when each answer was given, in events and in milliseconds (p50 / p99), and
versions published; then a 1,000-event burst, three times: from the last event acknowledged by
the broker to a served model trained on all of it. Writes docs/img/served-vs-learned.png: accuracy
through SEA's drifts at 5,000/s, served against learned, with river's logistic regression run
prequentially on the same events as an anchor.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

SERVE = "--serve"
SETS: list[str] = []  # --set overrides, for every daemon the benchmark starts


# ---------------------------------------------------------------- the daemon, recording
def serve(config: str, out: str) -> None:
    """Run the daemon as `learnd run` does, recording prequential errors and publishes."""
    from learnd.adapters.bootstrap import Daemon
    from learnd.adapters.logs import setup_logging
    from learnd.adapters.settings import build_config

    given = json.loads(config)
    cfg = build_config(environ={}, overrides=given.pop("--set", ()), defaults=given)
    setup_logging("WARNING", "text")
    d = Daemon(cfg)
    pipe = d.pipeline
    ids: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    progress: list[tuple[float, int]] = []
    publishes: list[tuple[int, int, float]] = []
    after_step = pipe._after_step

    def recording(batch, result):
        after_step(batch, result)
        ids.append(np.array(batch.ids, np.int64))
        errors.append(np.asarray(result.errors, np.float64).copy())
        progress.append((time.time(), pipe.learner.events_learned))

    pipe._after_step = recording  # type: ignore[method-assign]
    pipe.ref.subscribe(lambda s: publishes.append((s.version, s.trained_events, time.time())))
    signal.signal(signal.SIGTERM, lambda *_: d.stop())
    d.start()
    Path(out + ".ready").write_text(json.dumps(list(d.server.tcp_address)))
    d.run()
    np.savez(
        out,
        ids=np.concatenate(ids) if ids else np.zeros(0, np.int64),
        errors=np.concatenate(errors) if errors else np.zeros(0),
        progress=np.array(progress, np.float64).reshape(-1, 2),
        publishes=np.array(publishes, np.float64).reshape(-1, 3),
    )


class Learnd:
    """A recording daemon in its own process."""

    def __init__(self, cfg: dict, tmp: Path):
        self.out = str(tmp / f"rec-{time.monotonic_ns()}")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, SERVE, json.dumps({**cfg, "--set": SETS}), self.out],
            stdout=subprocess.DEVNULL,
            stderr=open(self.out + ".log", "wb"),
        )
        deadline = time.monotonic() + 60
        ready = Path(self.out + ".ready")
        while not ready.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(Path(self.out + ".log").read_text()[-3000:])
            time.sleep(0.05)
        time.sleep(0.1)  # the file is written before the text lands
        self.address = tuple(json.loads(ready.read_text()))
        from learnd.adapters.serving.client import LearndClient

        with LearndClient.tcp(*self.address) as c:  # consuming: partitions assigned
            while not c.health()["ready"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("learnd did not get its partitions within 60 s")
                time.sleep(0.05)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        with np.load(self.out + ".npz") as z:
            return {k: z[k] for k in z.files}


def daemon_config(bootstrap, topic, task, dim, labels, tmp) -> dict:
    schema: dict = {"task": task, "n_features": dim}
    if task == "multiclass":
        schema["classes"] = [str(c) for c in labels]
    return {
        "schema": schema,
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "dead_letter_topic": topic + "-dlq",
            "group_id": topic,
        },
        "checkpoint": {"dir": str(tmp / topic)},
        "serving": {"tcp_port": 0},
        "metrics": {"enabled": False},
    }


# ---------------------------------------------------------------- feeding
def producer(bootstrap):
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 1,
            "queue.buffering.max.messages": 2_000_000,
            "acks": "all",
        }
    )


def label_of(y, labels, task):
    if task == "regression":
        return float(y)
    return int(y) if task == "binary" else str(labels[int(y)])


def task_of(labels) -> str:
    return "regression" if labels is None else "binary" if len(labels) == 2 else "multiclass"


def regression_streams(n: int, only: tuple[str, ...]):
    """Drifting regression streams (river's FriedmanDrift (Friedman, 1991) with its drifts), as
    (name, X, y, None, switches)."""
    from river.datasets import synth

    out = []
    for name, drift in (
        ("Friedman, local abrupt drift", "lea"),
        ("Friedman, global abrupt drift", "gra"),
    ):
        if only and not name.lower().startswith(tuple(o.lower() for o in only)):
            continue
        # local expanding abrupt drift takes three positions, global recurring abrupt two
        switches = (n // 4, n // 2, 3 * n // 4) if drift == "lea" else (n // 3, 2 * n // 3)
        gen = synth.FriedmanDrift(drift_type=drift, position=switches, seed=7)
        rows = list(itertools.islice(gen, n))
        X = np.array([[x[k] for k in sorted(x)] for x, _ in rows], np.float32)
        y = np.array([t for _, t in rows], np.float64)
        out.append((name, X, y, None, list(switches)))
    return out


def feed(bootstrap, topic, X, y, labels, task, pace, sample, address, seed, bar):
    """Produce the stream at ``pace``; ask for a sampled event's prediction just before it."""
    from learnd.adapters.serving.client import LearndClient

    n = len(y)
    payloads = [
        orjson.dumps({"features": X[i].tolist(), "label": label_of(y[i], labels, task), "id": i})
        for i in range(n)
    ]
    feats = X.tolist()
    asked = np.random.default_rng(seed).random(n) < sample
    answers = []  # (event, unix time, version, prediction)
    p = producer(bootstrap)
    chunk = max(1, pace // 1000)  # one chunk a millisecond
    with LearndClient.tcp(*address) as c:
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            due = t0 + start / pace
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.0005))
            for i in range(start, min(n, start + chunk)):
                if asked[i]:
                    ans = c.predict(feats[i])
                    answers.append((i, time.time(), ans["version"], ans["prediction"]))
                p.produce(topic, payloads[i])
            p.poll(0)
            bar.update(min(n, start + chunk) - start)
        p.flush(60)
        rate = n / (time.perf_counter() - t0)
    return answers, rate


def lags(answers, progress, publishes):
    """For each answer: events the learner had learned that its version had not, since when
    (ms) the learner had been past it, and how long (ms) after the answer its event was
    learned (broker, consumer and batching: what the served model cannot know yet)."""
    trained = {int(v): int(t) for v, t, _ in publishes}
    pt, pn = progress[:, 0], progress[:, 1]
    ev, ms, ingest = [], [], []
    for i, t, version, _ in answers:
        k_in = int(np.searchsorted(pn, i, side="right"))  # the first batch holding event i
        ingest.append((pt[min(k_in, len(pt) - 1)] - t) * 1000)
        k = np.searchsorted(pt, t, side="right") - 1
        learned = int(pn[k]) if k >= 0 else 0
        behind = max(0, learned - trained.get(int(version), 0))
        ev.append(behind)
        if behind == 0:
            ms.append(0.0)
        else:
            first = int(np.argmax(pn > trained.get(int(version), 0)))
            ms.append(max(0.0, (t - pt[first]) * 1000))
    return np.array(ev), np.array(ms), np.array(ingest)


def run_stream(args, broker, name, X, y, labels, pace, tmp, bar):
    task = task_of(labels)
    topic = f"fresh-{abs(hash(name)) % 10**6}-{pace}-{time.monotonic_ns() % 10**6}"
    from learnd.adapters.kafka.topics import ensure_topics
    from learnd.adapters.settings import build_config

    cfg = daemon_config(broker.bootstrap, topic, task, X.shape[1], labels, tmp)
    ensure_topics(build_config(environ={}, defaults=cfg).kafka, partitions=1)
    d = Learnd(cfg, tmp)
    sample = min(1.0, args.asks_per_s / pace)
    answers, rate = feed(
        broker.bootstrap, topic, X, y, labels, task, pace, sample, d.address, args.seed, bar
    )
    from learnd.adapters.serving.client import LearndClient

    deadline = time.monotonic() + 120
    with LearndClient.tcp(*d.address) as c:
        while c.health()["events_learned"] < len(y) and time.monotonic() < deadline:
            time.sleep(0.1)
    rec = d.stop()
    asked = np.array([a[0] for a in answers], np.int64)
    if task == "regression":  # scores are absolute errors: lower is better
        learned_err = np.full(len(y), np.nan)
        learned_err[rec["ids"]] = rec["errors"]
        served_score = np.array([abs(float(a[3]) - y[a[0]]) for a in answers])
        learned_same, learned_all = np.nanmean(learned_err[asked]), np.nanmean(learned_err)
        correct = learned_err  # for the picture: unused for regression
        served_ok = served_score
    else:
        correct = np.zeros(len(y), bool)
        correct[rec["ids"]] = rec["errors"] == 0
        served_ok = np.array(
            [str(a[3]) == str(label_of(y[a[0]], labels, task)) for a in answers], bool
        )
        learned_same, learned_all = correct[asked].mean(), correct.mean()
    ev, ms, ingest = lags(answers, rec["progress"], rec["publishes"])
    return {
        "stream": name,
        "task": task,
        "pace": pace,
        "rate": rate,
        "n": len(y),
        "asked": len(asked),
        "served": float(served_ok.mean()),
        "learned_same": float(learned_same),
        "learned_all": float(learned_all),
        "lag_ev": (np.percentile(ev, 50), np.percentile(ev, 99)),
        "lag_ms": (np.percentile(ms, 50), np.percentile(ms, 99)),
        "ingest_ms": (np.percentile(ingest, 50), np.percentile(ingest, 99)),
        "versions": len(rec["publishes"]),
        "trace": (asked, served_ok, correct),
    }


def burst(args, broker, tmp, X, y, labels, times=3, size=1000):
    """Seconds from the last event of a burst acknowledged to a served model trained on it."""
    from learnd.adapters.kafka.topics import ensure_topics
    from learnd.adapters.serving.client import LearndClient
    from learnd.adapters.settings import build_config

    topic = f"fresh-burst-{time.monotonic_ns() % 10**6}"
    cfg = daemon_config(broker.bootstrap, topic, "binary", X.shape[1], labels, tmp)
    ensure_topics(build_config(environ={}, defaults=cfg).kafka, partitions=1)
    d = Learnd(cfg, tmp)
    out = []
    p = producer(broker.bootstrap)
    with LearndClient.tcp(*d.address) as c:
        for k in range(times):
            for i in range(k * size, (k + 1) * size):
                p.produce(
                    topic, orjson.dumps({"features": X[i].tolist(), "label": int(y[i]), "id": i})
                )
            p.flush(30)
            t_last = time.perf_counter()
            want = (k + 1) * size
            while c.info()["trained_events"] < want:
                if time.perf_counter() - t_last > 30:
                    break
                time.sleep(0.002)
            out.append(time.perf_counter() - t_last)
            time.sleep(1.0)  # idle between bursts
    d.stop()
    return out


# ---------------------------------------------------------------- the publish path alone
def in_process(chosen, pace):
    """Without broker or sockets: before each micro-batch is learned, the served snapshot and
    the learner predict it; the pipeline's clock advances as if events arrived at ``pace``.
    What publishing alone costs served accuracy."""
    from learnd.adapters.fakes import (
        ListDeadLetters,
        ListSource,
        ManualClock,
        MemoryCheckpointStore,
    )
    from learnd.daemon.config import LearndConfig
    from learnd.daemon.learning.learner import Learner
    from learnd.daemon.pipeline import Pipeline
    from learnd.daemon.service import Service

    print(f"\nin-process, events arriving at {pace:,}/s (manual clock):\n")
    print("| stream | served acc | learned acc | served - learned | versions |")
    print("|---|---|---|---|---|")
    for name, X, y, labels, _ in chosen:
        schema: dict = {"task": "binary" if len(labels) == 2 else "multiclass"}
        schema["n_features"] = X.shape[1]
        if schema["task"] == "multiclass":
            schema["classes"] = [str(c) for c in labels]
        cfg = LearndConfig.model_validate(
            {"schema": schema, "checkpoint": {"dir": tempfile.mkdtemp()}, "serving": {}}
        )
        clock = ManualClock()
        lrn = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
        pipe = Pipeline(cfg, lrn, ListDeadLetters(), clock)
        Service(pipe, ListSource(), MemoryCheckpointStore(), cfg.checkpoint, clock=clock).restore()
        yy = y.astype(np.float32) if schema["task"] == "binary" else y
        served, learned = [], []
        b = cfg.learning.batch_size
        for i in range(0, len(y), b):
            Xb, yb = X[i : i + b], yy[i : i + b]
            served.append(pipe.ref.current.predict_many(Xb).argmax(1) == yb)
            learned.append(lrn.predict_many(Xb).argmax(1) == yb)
            pipe.learn_arrays(Xb, yb)
            clock.advance(len(yb) / pace)
            pipe.tick()
        s_acc, l_acc = np.concatenate(served).mean(), np.concatenate(learned).mean()
        print(
            f"| {name} | {s_acc:.4f} | {l_acc:.4f} | {100 * (s_acc - l_acc):+.2f} pt |"
            f" {pipe.publisher.published} |"
        )


# ---------------------------------------------------------------- the picture
def river_anchor(X, y):
    from river import linear_model, preprocessing

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    keys = [f"x{i}" for i in range(X.shape[1])]
    ok = np.zeros(len(y), bool)
    for i, (row, label) in enumerate(zip(X.tolist(), y.tolist(), strict=True)):
        x = dict(zip(keys, row, strict=True))
        ok[i] = bool(model.predict_one(x)) == bool(label)
        model.learn_one(x, bool(label))
    return ok


def picture(path, result, switches, X, y, window=1000):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    asked, served_ok, correct = result["trace"]
    anchor = river_anchor(X, y)
    n = len(correct)

    def rolling(idx, ok):
        c = np.cumsum(np.r_[0, ok.astype(float)])
        k = np.cumsum(np.r_[0, np.ones(len(ok))])
        xs = np.arange(window, n, max(1, n // 400))
        lo, hi = np.searchsorted(idx, xs - window), np.searchsorted(idx, xs)
        return xs, (c[hi] - c[lo]) / np.maximum(k[hi] - k[lo], 1)

    every = np.arange(n)
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=120)
    for xs_ys, label, style in (
        (rolling(every, anchor), "river LogisticRegression (prequential)", dict(color="0.6")),
        (rolling(every, correct), "learnd, learned (prequential)", dict(color="tab:blue")),
        (
            rolling(asked, served_ok),
            "learnd, served (asked over the socket)",
            dict(color="tab:red"),
        ),
    ):
        ax.plot(*xs_ys, label=label, lw=1.6, **style)
    for s in switches:
        ax.axvline(s, color="k", ls=":", lw=1)
    ax.set_xlabel(
        f"event (drifting SEA fed live at {result['pace']:,} events/s; dotted: concept switches)"
    )
    ax.set_ylabel(f"accuracy over the last {window:,} events")
    ax.set_ylim(0.5, 1.0)
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title("What clients get: served (asked over the socket) against learned")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def print_accuracy_table(results):
    print(
        "\n| stream | pace | produced/s | served acc | learned acc (same events) | learned acc"
        " (all) | served - learned | served lag, events p50 / p99 | served lag, ms p50 / p99 |"
        " produced to learned, ms p50 / p99 | versions |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["task"] == "regression":
            continue
        print(
            f"| {r['stream']} | {r['pace']:,}/s | {r['rate']:,.0f} | {r['served']:.4f} |"
            f" {r['learned_same']:.4f} | {r['learned_all']:.4f} |"
            f" {100 * (r['served'] - r['learned_same']):+.2f} pt |"
            f" {r['lag_ev'][0]:,.0f} / {r['lag_ev'][1]:,.0f} |"
            f" {r['lag_ms'][0]:,.0f} / {r['lag_ms'][1]:,.0f} |"
            f" {r['ingest_ms'][0]:,.0f} / {r['ingest_ms'][1]:,.0f} | {r['versions']:,} |"
        )


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000, help="per synthetic stream")
    ap.add_argument("--paces", default="5000,50000")
    ap.add_argument("--streams", default="", help="comma-separated name prefixes")
    ap.add_argument("--asks-per-s", type=float, default=1000.0, help="sampled predictions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", default=str(ROOT / "docs" / "img" / "served-vs-learned.png"))
    ap.add_argument("--no-burst", action="store_true")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every daemon, as `learnd run --set` takes it",
    )
    ap.add_argument(
        "--in-process", action="store_true", help="the publish path alone, no broker or sockets"
    )
    args = ap.parse_args()
    SETS[:] = args.set
    from quality import streams
    from tqdm import tqdm

    from learnd.adapters.kafka.broker import EmbeddedBroker

    paces = [int(p) for p in args.paces.split(",")]
    only = tuple(s for s in args.streams.split(",") if s)
    try:
        chosen = streams(args.events, True, only)
    except SystemExit:  # --streams names regression streams only
        if args.in_process or not regression_streams(10, only):
            raise
        chosen = []
    if args.in_process:
        for pace in paces:
            in_process(chosen, pace)
        return
    chosen += regression_streams(args.events, only)
    total = sum(len(s[2]) for s in chosen) * len(paces)
    tmp = Path(tempfile.mkdtemp(prefix="learnd-fresh-"))
    results = []
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        with tqdm(total=total, unit="ev", unit_scale=True, desc="streams") as bar:
            for pace in paces:
                for name, X, y, labels, switches in chosen:
                    bar.set_postfix_str(f"{name[:20]} @ {pace:,}/s")
                    r = run_stream(args, broker, name, X, y, labels, pace, tmp, bar)
                    r["switches"] = switches
                    results.append(r)
        bursts = (
            []
            if args.no_burst or chosen[0][3] is None
            else burst(args, broker, tmp, *chosen[0][1:4])
        )
    if any(r["task"] != "regression" for r in results):
        print_accuracy_table(results)
    reg = [r for r in results if r["task"] == "regression"]
    if reg:
        print(
            "\n| stream | pace | produced/s | served MAE | learned MAE (same events) | learned MAE"
            " (all) | served / learned | served lag, events p50 / p99 | served lag, ms p50 / p99 |"
            " produced to learned, ms p50 / p99 | versions |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in reg:
        print(
            f"| {r['stream']} | {r['pace']:,}/s | {r['rate']:,.0f} | {r['served']:.4f} |"
            f" {r['learned_same']:.4f} | {r['learned_all']:.4f} |"
            f" {r['served'] / r['learned_same']:.3f}x |"
            f" {r['lag_ev'][0]:,.0f} / {r['lag_ev'][1]:,.0f} |"
            f" {r['lag_ms'][0]:,.0f} / {r['lag_ms'][1]:,.0f} |"
            f" {r['ingest_ms'][0]:,.0f} / {r['ingest_ms'][1]:,.0f} | {r['versions']:,} |"
        )
    if bursts:
        print(
            "\n1,000-event bursts, last event acknowledged -> served model trained on all of it: "
            + ", ".join(f"{b * 1000:.0f} ms" for b in bursts)
        )
    sea = [r for r in results if r["stream"].startswith("SEA") and r["pace"] == min(paces)]
    sea = sea if chosen and chosen[0][0].startswith("SEA") else []
    if sea:
        picture(args.png, sea[0], sea[0]["switches"], *chosen[0][1:3])
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == SERVE:
        serve(sys.argv[2], sys.argv[3])
    else:
        os.nice(0)
        main()
