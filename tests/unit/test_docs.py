"""The README's config reference and metrics list stay complete."""

from __future__ import annotations

import re
from pathlib import Path

from learnd.daemon.config import LearndConfig
from learnd.daemon.events.decoder import Reason

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# Config tables may also live in docs/ (a reference the README points to).
REFERENCE = "\n".join([README, *(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))])


def _keys(model, prefix=""):
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        if hasattr(field.annotation, "model_fields"):
            yield from _keys(field.annotation, key + ".")
        else:
            yield key


def test_every_config_key_is_documented():
    documented = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", REFERENCE, re.M):
        documented |= set(re.findall(r"`([a-z0-9_.]+)`", cell))
    missing = [k for k in _keys(LearndConfig) if k not in documented]
    assert not missing, f"README config table lacks {missing}"


def test_every_rejection_reason_is_documented():
    assert all(f"`{r.value}`" in README for r in Reason)
