"""Every socket error code, dead-letter reason, socket operation and CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from learnd.adapters.cli.main import build_parser
from learnd.daemon.events.decoder import Reason
from learnd.daemon.labels.join import JoinReason
from learnd.daemon.serving.requests import OPS

ROOT = Path(__file__).resolve().parents[2]


def error_codes() -> set[str]:
    codes = set()
    for path in [*(ROOT / "daemon").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]:
        text = path.read_text()
        codes |= set(re.findall(r'_error\(\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'"error": "([a-z_]+)"', text))
    return codes


def test_every_error_code_reason_and_op_is_in_the_protocol_doc():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    documented = set(re.findall(r"`([a-z_]+)`", doc))
    assert error_codes() - documented == set()
    assert {r.value for r in Reason} - documented == set()
    assert {r.value for r in JoinReason} - documented == set()
    assert set(OPS) - documented == set()


def test_every_command_is_in_the_operations_doc():
    doc = (ROOT / "docs" / "operations.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set()
    for name, parser in sub.choices.items():
        nested = [
            a
            for a in parser._actions
            if getattr(a, "choices", None) and a.dest.endswith("_command")
        ]
        if nested:
            commands |= {f"{name} {n}" for n in nested[0].choices}
        else:
            commands.add(name)
    missing = [c for c in sorted(commands) if f"`learnd {c}" not in doc]
    assert missing == []
