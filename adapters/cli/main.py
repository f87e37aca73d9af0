"""The `learnd` command line: run, serve, demo, topics create, predict, health, versions, rollback,
export, config show, checkpoint show, audit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import orjson

from learnd.adapters.cli import topics
from learnd.adapters.cli.checkpoint import add_commands as add_checkpoint_commands
from learnd.adapters.cli.connect import NoDaemon, add_where_args
from learnd.adapters.settings import ConfigError, build_config
from learnd.daemon.errors import StartupError

log = logging.getLogger("learnd")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="config file (.toml/.yaml); default $LEARND_CONFIG")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable); beats file and environment",
    )


def _load(args) -> object:
    return build_config(file=args.config, overrides=args.set)


def cmd_run(args) -> int:
    cfg = _load(args)  # before torch is imported: a typo is refused in a fraction of a second
    from learnd.adapters.bootstrap import Daemon
    from learnd.adapters.logs import setup_logging

    setup_logging(cfg.log.level, cfg.log.format)
    topics.check_before_run(cfg, args)
    daemon = Daemon(cfg, failpoints=_failpoints_from_env())

    def _stop(signum, frame):
        log.info(
            "signal %s: finishing the batch, checkpointing, exiting",
            signal.Signals(signum).name,
            extra={"event": "shutdown"},
        )
        daemon.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        daemon.start()
    except BaseException:  # a listener that cannot bind, say: release what did start
        daemon.close()
        daemon.source.close()
        raise
    daemon.run()
    return 0


def cmd_serve(args) -> int:
    """A serving-only replica following kafka.models_topic (adapters/serving/replica.py)."""
    cfg = _load(args)
    from learnd.adapters.logs import setup_logging
    from learnd.adapters.serving.replica import Replica

    setup_logging(cfg.log.level, cfg.log.format)
    replica = Replica(cfg)
    signal.signal(signal.SIGTERM, lambda s, f: replica.stop())
    signal.signal(signal.SIGINT, lambda s, f: replica.stop())
    try:
        replica.start()
    except BaseException:
        replica.close()
        raise
    replica.run()
    return 0


def cmd_topics_create(args) -> int:
    for line in topics.create(_load(args), args):
        print(f"learnd topics: {line}")
    return 0


def _failpoints_from_env():
    """``LEARND_TEST_FAILPOINT=after_rename:3`` SIGKILLs the process at the 3rd hit (tests only)."""
    from learnd.daemon.failpoints import NONE, Failpoints

    spec = os.environ.get("LEARND_TEST_FAILPOINT")
    if not spec:
        return NONE
    name, _, nth = spec.partition(":")
    remaining = [int(nth or 1)]

    def crash() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            log.warning("failpoint %s: SIGKILL", name, extra={"event": "failpoint"})
            os.kill(os.getpid(), signal.SIGKILL)

    return Failpoints({name: crash})


def _label_delay(text: str) -> float:
    from learnd.adapters.cli.demo_labels import parse_delay

    try:
        return parse_delay(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_demo(args) -> int:
    from learnd.adapters.cli.demo import run_demo
    from learnd.adapters.logs import setup_logging

    setup_logging("WARNING" if not args.verbose else "INFO")

    def flush_print(line: str) -> None:
        print(line, flush=True)

    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    return run_demo(
        args.rate,
        args.duration,
        args.switch_every,
        args.partitions,
        args.bad_rate,
        args.every,
        args.set,
        args.state_dir,
        out=flush_print,
        label_delay=args.label_delay,
    )


def cmd_demo_producer(args) -> int:
    from learnd.adapters.cli.demo import Producer

    producer = Producer(
        args.bootstrap_servers,
        args.topic,
        args.rate,
        args.switch_every,
        args.bad_rate,
        args.partitions,
    )
    signal.signal(signal.SIGTERM, lambda s, f: producer.stop_event.set())
    producer.start()
    try:
        while producer.is_alive():
            producer.join(1.0)
            if args.count and producer.sent >= args.count:
                producer.stop_event.set()
    except KeyboardInterrupt:
        producer.stop_event.set()
    producer.join(15)
    print(f"learnd demo-producer: sent {producer.sent} events to {args.topic}", flush=True)
    return 0


def _connect(args):
    """The daemon's address from the flags or the config, and a client connected to it."""
    from learnd.adapters.cli.connect import connect, target

    where = target(args)
    return where, connect(where)


def cmd_predict(args) -> int:
    from learnd.adapters.cli.connect import ask

    lines = [args.features] if args.features else [ln for ln in sys.stdin if ln.strip()]
    code = 0
    where, client = _connect(args)
    with client:
        for line in lines:
            try:
                features = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"learnd predict: not JSON: {e}", file=sys.stderr)
                code = 2
                continue
            answer = ask(where, client, {"op": "predict", "features": features})
            print(orjson.dumps(answer).decode())
            code = code or (0 if answer.get("ok") else 1)
    return code


def cmd_health(args) -> int:
    from learnd.adapters.cli.connect import ask

    where, client = _connect(args)
    with client:
        answer = ask(where, client, {"op": "health"})
    print(orjson.dumps(answer).decode())
    return 0 if answer.get("ready") else 1


def _admin(args, req: dict) -> int:
    from learnd.adapters.cli.connect import ask

    where, client = _connect(args)
    with client:
        answer = ask(where, client, req)
    print(orjson.dumps(answer).decode())
    return 0 if answer.get("ok") else 1


def cmd_versions(args) -> int:
    return _admin(args, {"op": "versions"})


def cmd_rollback(args) -> int:
    if args.unpin:
        return _admin(args, {"op": "unpin"})
    if args.version is None:
        print("learnd rollback: give a VERSION (see `learnd versions`) or --unpin", file=sys.stderr)
        return 2
    return _admin(args, {"op": "rollback", "version": args.version})


def cmd_export(args) -> int:
    """Write a served version as ONNX or TorchScript (adapters/cli/export.py)."""
    from learnd.adapters.cli.connect import ask

    where, client = _connect(args)
    with client:
        answer = ask(where, client, {"op": "export", "version": args.version})
    if not answer.get("ok"):
        print(orjson.dumps(answer).decode(), file=sys.stderr)
        return 1
    from learnd.adapters.cli.export import export

    path = args.output or f"learnd-v{answer['version']}.{'onnx' if args.format == 'onnx' else 'pt'}"
    export(answer, args.format, path)
    print(orjson.dumps({"ok": True, "version": answer["version"], "path": path}).decode())
    return 0


def cmd_config_show(args) -> int:
    print(json.dumps(_load(args).redacted(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learnd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon on the configured Kafka")
    _add_config_args(p)
    p.add_argument(
        "--create-topics",
        action="store_true",
        help="create the events and dead-letter topics if missing (see --partitions)",
    )
    topics.add_topic_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="serve what a learner writes to kafka.models_topic")
    _add_config_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("topics", help="the Kafka topics learnd reads and writes")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    create = tsub.add_parser(
        "create", help="create the events topic and the dead-letter topic where missing"
    )
    _add_config_args(create)
    topics.add_topic_args(create)
    create.set_defaults(func=cmd_topics_create)

    p = sub.add_parser("demo", help="embedded broker + drifting stream + daemon, live progress")
    _add_config_args(p)
    p.add_argument("--rate", type=float, default=2000.0, help="events per second (default 2000)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--switch-every", type=int, default=20_000, help="events per concept")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--bad-rate", type=float, default=0.001, help="share of invalid records")
    p.add_argument("--every", type=float, default=2.0, help="seconds between progress lines")
    p.add_argument("--state-dir", help="where checkpoints and the broker log go (default: temp)")
    p.add_argument(
        "--label-delay",
        type=_label_delay,
        help="predict now, label later: a client asks for each prediction and its label follows "
        "this long after (5s, 500ms, 2m) on the label topic (labels.mode = join)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the daemon's logs")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("demo-producer", help="produce the demo's drifting stream to a broker")
    p.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    p.add_argument("--topic", default="learnd.events")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--switch-every", type=int, default=20_000)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--bad-rate", type=float, default=0.001)
    p.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    p.set_defaults(func=cmd_demo_producer)

    for name, func, helptext in (
        ("predict", cmd_predict, "ask the daemon for a prediction"),
        ("health", cmd_health, "exit 0 when the daemon is ready"),
        ("versions", cmd_versions, "list the served versions kept for rollback"),
        ("rollback", cmd_rollback, "serve a kept version again and pause publishing"),
        ("export", cmd_export, "write a served version as an ONNX or TorchScript file"),
    ):
        p = sub.add_parser(name, help=helptext)
        add_where_args(p)
        if name == "predict":
            p.add_argument(
                "features",
                nargs="?",
                help="features as JSON (object or list); default: one per stdin line",
            )
        if name == "rollback":
            p.add_argument("version", nargs="?", type=int, help="a kept version to serve again")
            p.add_argument(
                "--unpin", action="store_true", help="resume publishing after a rollback"
            )
        if name == "export":
            p.add_argument("--version", type=int, help="a kept version (default: the served one)")
            p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
            p.add_argument("-o", "--output", help="file to write (default learnd-vN.onnx / .pt)")
        p.set_defaults(func=func)

    p = sub.add_parser("config", help="configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    show = csub.add_parser("show", help="print the effective config, secrets redacted")
    _add_config_args(show)
    show.set_defaults(func=cmd_config_show)
    add_checkpoint_commands(sub, _add_config_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, StartupError) as e:
        print(f"learnd: {e}", file=sys.stderr)
        return 2
    except NoDaemon as e:
        print(f"learnd {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
