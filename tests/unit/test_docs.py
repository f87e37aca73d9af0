"""The docs stay complete and true to the code: config reference, rejection reasons, metrics,
error codes, links."""

from __future__ import annotations

import re
from pathlib import Path

from learnd.adapters.cli import config_docs
from learnd.daemon.config import LearndConfig
from learnd.daemon.events.decoder import Reason

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}


def _fields(model, prefix=""):
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        if hasattr(field.annotation, "model_fields"):
            yield from _fields(field.annotation, key + ".")
        else:
            yield key, field


def test_configuration_md_is_generated_from_the_config_model():
    committed = DOCS["configuration.md"]
    assert committed == config_docs.render(), (
        f"docs/configuration.md is stale: run {config_docs.COMMAND}"
    )


def test_every_config_key_has_a_description_and_a_row():
    undocumented = [key for key, field in _fields(LearndConfig) if not field.description]
    assert not undocumented, f"give these fields a docstring in the config model: {undocumented}"
    rows = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", DOCS["configuration.md"], re.M))
    assert rows == {key for key, _ in _fields(LearndConfig)}


def test_every_rejection_reason_is_documented():
    assert all(f"`{r.value}`" in README for r in Reason)


def test_every_exported_metric_is_in_the_metrics_doc():
    names = set()
    for path in (ROOT / "adapters").rglob("*.py"):
        text = path.read_text()
        if "prometheus_client" in text:  # where metrics are made (other learnd_ names exist)
            names |= set(re.findall(r'"(learnd_[a-z_]+)"', text))
    assert len(names) > 30
    table = DOCS["metrics.md"]
    missing = [n for n in sorted(names) if not re.search(rf"`{n}(_total)?`", table)]
    assert not missing, f"docs/metrics.md's table lacks {missing}"


def test_every_socket_error_code_is_in_the_protocol_doc():
    codes = set()
    for path in [*(ROOT / "daemon").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]:
        text = path.read_text()
        codes |= set(re.findall(r'_error\(\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'"error": "([a-z_]+)"', text))
    assert {"bad_request", "unknown_op", "too_large", "unauthorized"} <= codes
    missing = [c for c in sorted(codes) if f"`{c}`" not in DOCS["protocol.md"]]
    assert not missing, f"docs/protocol.md lacks error codes {missing}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_and_anchors_resolve():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    anchors = {
        f: {_anchor(h) for h in re.findall(r"^#+ (.*)$", f.read_text(), re.M)} for f in files
    }
    broken = []
    for f in files:
        for target, anchor in re.findall(r"\]\(([^)#\s:]*)(?:#([^)\s]+))?\)", f.read_text()):
            path = (f.parent / target).resolve() if target else f
            if target.endswith(".png"):
                continue  # pictures: made by the bench scripts, checked where they are committed
            if not path.exists():
                broken.append(f"{f.name}: {target}")
            elif anchor and anchor not in anchors.get(path, set()):
                broken.append(f"{f.name}: {target}#{anchor}")
    assert not broken, broken


def test_readme_is_a_short_manual():
    assert len(README.splitlines()) <= 300
