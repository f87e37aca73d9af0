"""`learnd checkpoint show` and `learnd audit` on checkpoints a real pipeline wrote."""

from __future__ import annotations

import json

import torch

from learnd.adapters.cli.main import main
from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock
from learnd.adapters.storage.local import LocalCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from tests.conftest import sea_config


def _write_checkpoint(tmp_path, audit_ids=True):
    cfg = sea_config(tmp_path, checkpoint={"audit_ids": audit_ids})
    clock = ManualClock()
    pipe = Pipeline(
        cfg, Learner(cfg.schema_, cfg.model, cfg.learning, "cpu"), ListDeadLetters(), clock
    )
    source = ListSource()
    store = LocalCheckpointStore(cfg.checkpoint.dir)
    svc = Service(pipe, source, store, cfg.checkpoint, clock=clock)
    events = [{**e, "id": i} for i, e in enumerate(DriftingSEA(seed=4).take(300))]
    source.append(events[:200], partition=0)
    source.append([b"{{{", *events[200:]], partition=1)
    svc.restore()
    while source.remaining():
        svc.step()
    assert svc.checkpoint()
    return cfg.checkpoint.dir


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out else None), out.err


def test_checkpoint_show_prints_positions_counters_and_the_audit(tmp_path, capsys):
    where = _write_checkpoint(tmp_path)
    code, shown, _ = _run(capsys, "checkpoint", "show", str(where))
    assert code == 0
    assert shown["positions"] == {"0": 200, "1": 101}
    assert (shown["records"], shown["valid"], shown["rejected"]) == (301, 300, {"not_json": 1})
    assert shown["events_learned"] == 300
    audit = shown["audit"]
    assert (audit["applied_once"], audit["never"], audit["more_than_once"]) == (300, 0, 0)
    assert audit["highest_id"] == 299 and audit["ok"]
    newest = sorted(where.glob("ckpt-*.pt"))[-1]
    code, by_file, _ = _run(capsys, "checkpoint", "show", str(newest))
    assert code == 0 and by_file == shown


def test_audit_exits_0_only_when_every_id_was_learned_exactly_once(tmp_path, capsys):
    where = _write_checkpoint(tmp_path)
    assert _run(capsys, "audit", str(where), "--ids", "300")[0] == 0
    code, audit, _ = _run(capsys, "audit", str(where), "--ids", "310")
    assert code == 1 and audit["never"] == 10 and audit["ids_never"][:2] == [300, 301]
    code, audit, _ = _run(capsys, "audit", str(where), "--ids", "250")
    assert code == 1 and audit["beyond_expected"] == 50
    newest = sorted(where.glob("ckpt-*.pt"))[-1]
    state = torch.load(newest, weights_only=True)
    state["audit"][7] += 1  # an id learned twice
    torch.save(state, newest)
    code, audit, _ = _run(capsys, "audit", str(where))
    assert code == 1 and audit["ids_more_than_once"] == [7] and audit["max_count"] == 2


def test_audit_without_audit_ids_or_checkpoint_says_so(tmp_path, capsys):
    where = _write_checkpoint(tmp_path, audit_ids=False)
    code, _, err = _run(capsys, "audit", str(where))
    assert code == 1 and "checkpoint.audit_ids" in err
    code, shown, _ = _run(capsys, "checkpoint", "show", str(where))
    assert code == 0 and shown["audit"] is None
    code, _, err = _run(capsys, "checkpoint", "show", str(tmp_path / "nothing"))
    assert code == 1 and "no checkpoint" in err
