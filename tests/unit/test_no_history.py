"""The project speaks of itself only: no development history and no mention of the machines it
was built on, anywhere in the tracked tree. Decisions belong in docs/design.md, with their data.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()

# Each needle is assembled so that this file does not match itself.
NEEDLES = {
    "a development session": r"\bsess" + r"ions? [0-9]+",
    "an issue number": r"(?<![\w/&.-])#" + r"[0-9]{1,5}\b",
    "the issue": r"\bthe iss" + r"ue\b|\biss" + r"ues? [0-9]+",
    "the host it ran on": r"\bthis ho" + r"st\b|\bthat ho" + r"st\b|\bthe [a-z0-9-]*ho" + r"st's\b",
    "the project's machines": r"\bthese mach" + r"ines\b|project's mach" + r"ines\b",
    "the steering folder": r"\.\./sha" + r"red\b|/work/sha" + r"red\b",
    "the reliability notes": r"RELIABI" + r"LITY\.md",
}
PATTERN = re.compile("|".join(f"(?:{p})" for p in NEEDLES.values()), re.I)


def _tracked() -> list[Path]:
    if shutil.which("git") and (ROOT / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    skip = {".git", ".venv", "build", "__pycache__", ".mypy_cache", ".pytest_cache"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def hits(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        if path.resolve() == THIS or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # a picture or another binary file
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            for m in PATTERN.finditer(line):
                found.append(f"{name}:{n}: {m.group(0)!r} in {line.strip()[:100]}")
    return found


def test_the_needles_catch_what_they_are_for(tmp_path):
    sample = tmp_path / "sample.md"
    lines = [
        "measured in sess" + "ion 9",
        "see #" + "19",
        "th" + "e issue's table",
        "on th" + "is host",
        "on thes" + "e machines",
        "../sh" + "ared/notes",
        "RELIA" + "BILITY.md test 3",
    ]
    sample.write_text("\n".join(lines) + "\n")
    assert len(hits([sample])) == len(lines)
    clean = tmp_path / "clean.md"
    clean.write_text(
        "session_timeout_ms, pytorch/ao#2752, colour #1f4e9c, a host, issues found upstream\n"
    )
    assert hits([clean]) == []


def test_the_tree_tells_no_development_history():
    found = hits(_tracked())
    assert not found, "development history or machine mentions:\n" + "\n".join(found)
