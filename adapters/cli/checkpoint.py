"""``learnd checkpoint show`` and ``learnd audit``: what a checkpoint holds, without a daemon.

The checkpoint is read the way the daemon reads it (``torch.load(weights_only=True)``: tensors
and plain containers only; nothing is unpickled as code), from a file, from a directory (its
newest readable checkpoint), or from the configured ``checkpoint`` store (local or S3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from learnd.daemon.checkpoint_summary import summarize


def add_commands(sub: Any, add_config_args) -> None:
    """Register ``checkpoint show`` and ``audit`` on the ``learnd`` sub-parsers ``sub``."""
    p = sub.add_parser("checkpoint", help="inspect checkpoints")
    csub = p.add_subparsers(dest="checkpoint_command", required=True)
    show = csub.add_parser(
        "show", help="print a checkpoint's positions, counters and audit summary (JSON)"
    )
    _where(show, add_config_args)
    show.set_defaults(func=cmd_checkpoint_show)

    audit = sub.add_parser(
        "audit",
        help="check the exactly-once audit (checkpoint.audit_ids) of a checkpoint: exit 0 when "
        "every id was learned exactly once",
    )
    _where(audit, add_config_args)
    audit.add_argument(
        "--ids",
        type=int,
        help="the ids produced were 0..IDS-1: each must be learned once and no other "
        "(default: 0 up to the highest id learned)",
    )
    audit.set_defaults(func=cmd_audit)


def _where(p: argparse.ArgumentParser, add_config_args) -> None:
    p.add_argument(
        "path",
        nargs="?",
        help="a checkpoint file, or a directory of them (its newest readable one); default: "
        "the configured checkpoint store",
    )
    add_config_args(p)


def _load_state(args) -> dict[str, Any] | None:
    from learnd.adapters.storage.local import LocalCheckpointStore, load_newest

    if args.path:
        path = Path(args.path)
        if path.is_dir():
            return LocalCheckpointStore(path).load_latest()
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint file or directory at {path}")
        state, _ = load_newest([path.name], lambda _name: path, str(path.parent))
        return state
    from learnd.adapters.bootstrap import checkpoint_store
    from learnd.adapters.settings import build_config

    cfg = build_config(file=args.config, overrides=args.set)
    return checkpoint_store(cfg).load_latest()


def _summary(args, ids: int | None = None) -> dict[str, Any] | None:
    try:
        state = _load_state(args)
    except FileNotFoundError as e:
        print(f"learnd {args.command}: {e}", file=sys.stderr)
        return None
    if state is None:
        print(f"learnd {args.command}: no checkpoint found", file=sys.stderr)
        return None
    return summarize(state, ids)


def cmd_checkpoint_show(args) -> int:
    summary = _summary(args)
    if summary is None:
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def cmd_audit(args) -> int:
    summary = _summary(args, args.ids)
    if summary is None:
        return 1
    audit = summary["audit"]
    if audit is None:
        print(
            f"learnd audit: checkpoint {summary['id']} has no audit (set checkpoint.audit_ids)",
            file=sys.stderr,
        )
        return 1
    print(json.dumps({"id": summary["id"], "positions": summary["positions"], **audit}, indent=2))
    return 0 if audit["ok"] else 1
