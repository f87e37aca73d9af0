"""Full-size reliability soaks and a long memory/fd leak check (docs/operations.md, "What proves
it"; results in docs/benchmarks.md, "Soaks"). Progress and an ETA go to stderr.

Not part of CI: run by hand and read the tables.

    .venv/bin/python bench/soak.py leak --minutes 60
    .venv/bin/python bench/soak.py kills            # 50k events, 4 partitions, 20 seeded SIGKILLs
    .venv/bin/python bench/soak.py swaps            # 32 client threads, 500 hot swaps
    .venv/bin/python bench/soak.py disk-full        # checkpoints on a 1 MiB tmpfs (needs unshare)
    .venv/bin/python bench/soak.py poison           # 30% flipped labels for 3k events vs the gate
    .venv/bin/python bench/soak.py plasticity       # 200 new random concepts, 10M events
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from _plasticity import plasticity  # noqa: E402
from _progress import bar, say  # noqa: E402
from _soak_daemon import (  # noqa: E402
    LEARND,
    consumer_child,
    daemon_env,
    info,
    learnd_pid,
    proc_stats,
    produce,
)
from _swaps import swaps  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

from learnd.adapters.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from learnd.adapters.kafka.topics import ensure_topics  # noqa: E402
from learnd.adapters.serving.client import LearndClient  # noqa: E402
from learnd.adapters.settings import build_config  # noqa: E402
from learnd.adapters.storage.local import LocalCheckpointStore  # noqa: E402
from learnd.daemon.events.synthetic import DriftingSEA  # noqa: E402


# ---------------------------------------------------------------- leak
def leak(args):
    tmp = Path(tempfile.mkdtemp(prefix="learnd-leak-"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    port = free_port()
    env = daemon_env(broker.bootstrap, "leak", tmp / "state", port, LEARND_CHECKPOINT__EVERY_S="10")
    cfg = build_config(environ=env)
    ensure_topics(cfg.kafka, partitions=2)
    proc = subprocess.Popen([LEARND, "run"], env=env, stderr=open(tmp / "learnd.log", "wb"))
    stop = threading.Event()
    sent = [0]
    errors = [0]

    def producer():
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
        stream = iter(DriftingSEA(seed=5, switch_every=50_000))
        t0 = time.monotonic()
        while not stop.is_set():
            e = next(stream)
            p.send("leak", orjson.dumps({**e, "id": os.urandom(8).hex()}), partition=sent[0] % 2)
            sent[0] += 1
            ahead = sent[0] / args.rate - (time.monotonic() - t0)
            if ahead > 0.005:
                time.sleep(ahead)
        p.close(10)

    def asker():
        while not stop.is_set():
            try:
                with LearndClient.tcp("127.0.0.1", port) as c:
                    for _ in range(1000):
                        if stop.is_set():
                            break
                        c.predict([5.0, 4.0, 1.0])
                        time.sleep(0.01)
            except OSError:
                errors[0] += 1
                time.sleep(0.5)

    while info(port) is None:
        time.sleep(0.5)
    threads = [threading.Thread(target=producer), threading.Thread(target=asker)]
    for t in threads:
        t.start()
    rows = []
    t0 = time.monotonic()
    print(f"leak check: {args.minutes} min, {args.rate:g} events/s, ~100 predictions/s")
    print(
        f"{'minute':>7} {'events':>11} {'learned':>11} {'rss MiB':>8} {'fds':>4} {'version':>8}"
        f" {'consumer MiB':>13}"
    )
    progress = bar(args.minutes * 60, "leak check", "s")
    try:
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(args.every)
            progress.update(args.every)
            rss, fds = proc_stats(proc.pid)
            child = consumer_child(proc.pid)
            child_rss = proc_stats(child)[0] if child else 0
            i = info(port) or {}
            rows.append((time.monotonic() - t0, rss, fds, child_rss))
            say(
                f"{(time.monotonic() - t0) / 60:7.1f} {sent[0]:>11,} {i.get('events_learned', 0):>11,} "
                f"{rss / 2**20:8.1f} {fds:>4} {i.get('version', 0):>8} {child_rss / 2**20:13.1f}"
            )
    finally:
        progress.close()
        stop.set()
        for t in threads:
            t.join(30)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        broker.stop()
    warm = [r for r in rows if r[0] >= 300] or rows  # after 5 minutes of warm-up
    first, last = warm[0], warm[-1]
    print(
        f"\nRSS after warm-up {first[1] / 2**20:.1f} MiB -> end {last[1] / 2**20:.1f} MiB "
        f"({100 * (last[1] - first[1]) / first[1]:+.1f}%), max {max(r[1] for r in rows) / 2**20:.1f} MiB"
    )
    if first[3]:
        print(
            f"consumer process RSS after warm-up {first[3] / 2**20:.1f} MiB -> end "
            f"{last[3] / 2**20:.1f} MiB ({100 * (last[3] - first[3]) / first[3]:+.1f}%)"
        )
    print(f"fds after warm-up {first[2]} -> end {last[2]} (max {max(r[2] for r in rows)})")
    print(f"client connection errors: {errors[0]}; daemon exit code {rc}")


# ---------------------------------------------------------------- kills
def kills(args):
    tmp = Path(tempfile.mkdtemp(prefix="learnd-kills-"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    port = free_port()
    env = daemon_env(
        broker.bootstrap,
        "kills",
        tmp / "state",
        port,
        LEARND_CHECKPOINT__AUDIT_IDS="true",
        LEARND_CHECKPOINT__EVERY_EVENTS="2000",
        LEARND_KAFKA__MAX_POLL_RECORDS="500",
    )
    cfg = build_config(environ=env)
    ensure_topics(cfg.kafka, partitions=args.partitions)
    n = args.events
    # paced so that the kills fall all along the stream (a restart takes ~10 s: group rejoin)
    feeder = threading.Thread(
        target=produce,
        args=(
            broker.bootstrap,
            "kills",
            list(DriftingSEA(seed=3).take(n)),
            args.partitions,
            0,
            n / (args.kills * 10),
        ),
    )
    feeder.start()
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    for k in bar(args.kills, "SIGKILLs", "kill", range(args.kills)):
        before = LocalCheckpointStore(tmp / "state").load_latest()
        base = int(before["learner"]["events_learned"]) if before else 0
        proc = subprocess.Popen([LEARND, "run"], env=env, stderr=subprocess.DEVNULL)
        # kill while learning is under way: once the restarted process learns past its checkpoint
        deadline = time.monotonic() + 30
        while (
            proc.poll() is None
            and time.monotonic() < deadline
            and ((i := info(port)) is None or i["events_learned"] <= base)
        ):
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 2.0))
        proc.kill()
        proc.wait()
        got = LocalCheckpointStore(tmp / "state").load_latest()
        learned = int(got["learner"]["events_learned"]) if got else 0
        say(f"kill {k + 1:2d}/{args.kills}: checkpoint holds {learned:,} events")
    feeder.join()
    proc = subprocess.Popen([LEARND, "run"], env=env, stderr=subprocess.DEVNULL)
    stalled_since, last, fresh_group = time.monotonic(), -1, False
    while (i := info(port)) is None or i["events_learned"] < n:
        learned = i["events_learned"] if i else -1
        if learned != last:
            stalled_since, last = time.monotonic(), learned
        elif time.monotonic() - stalled_since > 60 and not fresh_group:
            # tansu's group coordinator was seen to stop completing joins after many abrupt
            # member deaths; positions come from the checkpoint, so a fresh group is safe.
            print("no progress for 60 s (group join stuck at the broker): fresh group id")
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            env["LEARND_KAFKA__GROUP_ID"] = "kills-fresh"
            proc = subprocess.Popen([LEARND, "run"], env=env, stderr=subprocess.DEVNULL)
            fresh_group = True
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    state = LocalCheckpointStore(tmp / "state").load_latest()
    audit = state["audit"].numpy()[:n]
    broker.stop()
    print(
        f"\n{n:,} events, {args.partitions} partitions, {args.kills} SIGKILLs, "
        f"{time.monotonic() - t0:.0f} s; final exit code {rc}"
    )
    print(
        f"ids applied once: {(audit == 1).sum():,}   lost (0): {(audit == 0).sum()}   "
        f"twice or more: {(audit > 1).sum()}"
    )


# ---------------------------------------------------------------- disk full
def disk_full(args):
    if shutil.which("unshare") is None:
        sys.exit("disk-full needs unshare (util-linux)")
    tmp = Path(tempfile.mkdtemp(prefix="learnd-disk-"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    port, mport = free_port(), free_port()
    state = tmp / "state"
    state.mkdir()
    env = daemon_env(broker.bootstrap, "disk", state, port, mport, LEARND_CHECKPOINT__EVERY_S="1")
    cfg = build_config(environ=env)
    ensure_topics(cfg.kafka, partitions=1)
    check = (
        f"from learnd.adapters.storage.local import LocalCheckpointStore as S; "
        f"s = S('{state}').load_latest(); print('loads', s['id'], s['learner']['events_learned'])"
    )
    # the tmpfs exists only in this mount namespace: check the checkpoint there, after exit
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {state} && "
        f"head -c 700000 /dev/zero > {state}/filler && {LEARND} run; "
        f'cd {ROOT} && {sys.executable} -c "{check}" > {tmp}/check.txt 2>&1'
    )
    proc = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", script], env=env, stderr=open(tmp / "learnd.log", "wb")
    )
    feeder = threading.Thread(
        target=produce,
        args=(broker.bootstrap, "disk", list(DriftingSEA(seed=9).take(args.events)), 1),
    )
    feeder.start()
    ok = failed = 0
    while info(port) is None:
        time.sleep(0.2)
    t0 = time.monotonic()
    progress = bar(args.seconds, "serving on a full disk", "s")
    while (elapsed := time.monotonic() - t0) < args.seconds:
        progress.update(elapsed - progress.n)
        try:
            with LearndClient.tcp("127.0.0.1", port, timeout=2) as c:
                for _ in range(50):
                    ok += bool(c.predict([1.0, 2.0, 3.0])["ok"])
                    time.sleep(0.01)
        except OSError:
            failed += 1
            time.sleep(0.5)
    progress.close()
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    ck = [line for line in body.splitlines() if line.startswith("learnd_checkpoints_total")]
    health = LearndClient.tcp("127.0.0.1", port).health()
    os.kill(learnd_pid(proc.pid), signal.SIGTERM)
    rc = proc.wait(60)
    feeder.join()
    broker.stop()
    log = (tmp / "learnd.log").read_text()
    print(f"predictions ok: {ok}, connection failures: {failed}; exit code {rc}")
    print("\n".join(ck))
    print(f"health while failing: {health}")
    print(f"checkpoint failures logged: {log.count('checkpoint failed')}")
    print(f"after exit, inside the namespace: {(tmp / 'check.txt').read_text().strip()}")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("leak")
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--rate", type=float, default=3000)
    p.add_argument("--every", type=float, default=60)
    p.set_defaults(func=leak)
    p = sub.add_parser("kills")
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=kills)
    p = sub.add_parser("swaps")
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--swaps", type=int, default=500)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--processes", type=int, default=0, help="serving processes (0: in-process)")
    p.set_defaults(func=swaps)
    p = sub.add_parser("disk-full")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=20)
    p.set_defaults(func=disk_full)
    p = sub.add_parser("poison")
    p.add_argument("--before", type=int, default=20_000)
    p.add_argument("--poisoned", type=int, default=3_000)
    p.add_argument("--after", type=int, default=15_000)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--window", type=int, default=2000)
    p.set_defaults(func=poison)
    p = sub.add_parser("plasticity", help="relearning new random concepts, hundreds of times")
    p.add_argument("--concepts", type=int, default=201, help="concepts (switches + 1)")
    p.add_argument("--every", type=int, default=50_000, help="events per concept")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--set", action="append", help="learning.KEY=VALUE over the defaults")
    p.add_argument("--state", help="resumable: save progress here, resume from it")
    p.add_argument("--save-every", type=int, default=5, help="concepts between saves")
    p.add_argument("--verbose", action="store_true", help="a line per concept")
    p.set_defaults(func=plasticity)
    args = ap.parse_args()
    args.func(args)


# ---------------------------------------------------------------- label poisoning
def poison(args):
    """Label poisoning: 30% flipped labels for 3k events, in-process with fakes."""
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
    from learnd.daemon.serving.snapshot import Snapshot

    cfg = LearndConfig.model_validate(
        {
            "schema": {"task": "binary", "features": ["x1", "x2", "x3"]},
            "learning": {"publish_every_s": 0.2, "gate": {"window": args.window}},
        }
    )
    clock = ManualClock()
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    pipe = Pipeline(cfg, learner, ListDeadLetters(), clock)
    src = ListSource(batch=100)
    svc = Service(pipe, src, MemoryCheckpointStore(), cfg.checkpoint, clock=clock)
    stream = list(
        DriftingSEA(seed=args.seed, switch_every=10**9).take(
            args.before + args.poisoned + args.after
        )
    )
    rng = random.Random(args.seed)
    for i in range(args.before, args.before + args.poisoned):
        if rng.random() < 0.3:
            stream[i] = {**stream[i], "label": 1 - stream[i]["label"]}
    ref = list(DriftingSEA(seed=args.seed + 1000, switch_every=10**9).take(5000))
    Xr = np.array([[e["features"][k] for k in ("x1", "x2", "x3")] for e in ref], np.float32)
    yr = np.array([e["label"] for e in ref])

    def acc(snap):
        return float((snap.predict_many(Xr).argmax(axis=1) == yr).mean())

    decisions = []  # (events_learned, candidate acc, served acc, published)
    decide = pipe.publisher._decide

    def recording_decide(cand, verdict):
        served = pipe.ref.current
        before = pipe.publisher.published
        decide(cand, verdict)
        decisions.append(
            (
                learner.events_learned,
                acc(Snapshot.from_draft(cand, -1)),
                acc(served),
                pipe.publisher.published > before,
            )
        )

    pipe.publisher._decide = recording_decide
    served_acc = []  # (events_learned, served acc) after every step
    src.append(stream)
    svc.restore()
    progress = bar(len(stream), "learning through the poisoning", "ev")
    while src.remaining():
        svc.step()
        clock.advance(0.05)
        served_acc.append((learner.events_learned, acc(pipe.ref.current)))
        progress.update(learner.events_learned - progress.n)
    progress.close()
    b, p = args.before, args.before + args.poisoned
    pre = max(a for n, a in served_acc if b - 2000 <= n <= b)
    during_after = [a for n, a in served_acc if n > b]
    worst = min(during_after)
    bad_published = [d for d in decisions if d[3] and d[1] < d[2] - 0.01]
    blocked_bad = [d for d in decisions if not d[3] and d[1] < d[2] - 0.01]
    recovered_at = next((n for n, a in served_acc if n > p and a >= pre - 0.01), None)
    print(
        f"{args.before:,} clean, {args.poisoned:,} with 30% flipped labels, {args.after:,} clean; "
        f"accuracy on a clean reference set of 5,000"
    )
    print(
        f"served before poisoning {pre:.4f}; lowest served afterwards {worst:.4f} "
        f"({100 * (worst - pre):+.2f} pp)"
    )
    print(
        f"gate decisions: {len(decisions)}; candidates >1pp worse than served (on the clean set): "
        f"blocked {len(blocked_bad)}, published {len(bad_published)}"
    )
    print(
        "served back within 1 pp after "
        + (f"{recovered_at - p:,} clean events" if recovered_at else "never")
    )


if __name__ == "__main__":
    main()
