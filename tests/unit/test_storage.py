from __future__ import annotations

import logging
import os
import pickle

import pytest
import torch

from learnd.adapters.storage.local import CheckpointError, LocalCheckpointStore


def state(n):
    return {"format": 1, "n": n, "w": torch.full((3,), float(n))}


def test_save_keeps_the_newest_k_and_loads_the_newest(tmp_path):
    store = LocalCheckpointStore(tmp_path, keep=2)
    names = [store.save(state(i)) for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == names[-2:]
    loaded = store.load_latest()
    assert (
        loaded["n"] == 4
        and loaded["id"] == names[-1]
        and torch.equal(loaded["w"], torch.full((3,), 4.0))
    )


def test_no_checkpoint_means_none(tmp_path):
    assert LocalCheckpointStore(tmp_path / "absent").load_latest() is None


def test_corrupt_newest_falls_back_loudly(tmp_path, caplog):
    store = LocalCheckpointStore(tmp_path)
    store.save(state(1))
    newest = tmp_path / store.save(state(2))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with caplog.at_level(logging.ERROR):
        assert store.load_latest()["n"] == 1
    assert store.fallbacks == 1 and "unreadable" in caplog.text


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    store = LocalCheckpointStore(tmp_path)
    store.save(state(1))
    with open(tmp_path / "ckpt-000000000009.pt", "wb") as f:
        torch.save({"format": 1, "x": Evil()}, f, pickle_module=pickle)
    assert store.load_latest()["n"] == 1
    assert not (tmp_path / "pwned").exists()


def test_all_corrupt_refuses_to_start_over_them(tmp_path):
    (tmp_path / "ckpt-000000000001.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints"):
        LocalCheckpointStore(tmp_path).load_latest()


def test_failed_write_leaves_previous_intact_and_no_temp(tmp_path):
    store = LocalCheckpointStore(tmp_path)
    store.save(state(1))

    class Boom:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        store.save({"format": 1, "bad": Boom()})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000001.pt"]
    assert store.load_latest()["n"] == 1


def _write_forever(directory: str, started) -> None:
    store = LocalCheckpointStore(directory, keep=2)
    n = store.load_latest()["n"]
    started.set()
    while True:
        n += 1
        store.save({"format": 1, "n": n, "w": torch.full((250_000,), float(n))})


def test_writer_killed_200_times_mid_write_never_leaves_a_corrupt_checkpoint(tmp_path):
    """RELIABILITY test 4: SIGKILL a checkpoint writer at random moments, 200 times.

    Writers are forked from a forkserver that has imported torch but run no op (a process
    that has run torch ops cannot fork safely).
    """
    import multiprocessing
    import random
    import time

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["torch", "learnd.adapters.storage.local", _write_forever.__module__]
    )
    store = LocalCheckpointStore(tmp_path, keep=2)
    t0 = time.perf_counter()
    store.save({"format": 1, "n": 0, "w": torch.zeros(250_000)})
    # Kill within a few writes' time: some kills land mid-write, some between writes, whatever
    # this machine's disk speed.
    window_s = max(0.05, 3 * (time.perf_counter() - t0))
    rng = random.Random(4)
    for _ in range(200):
        started = ctx.Event()
        writer = ctx.Process(target=_write_forever, args=(str(tmp_path), started))
        writer.start()
        # Kill it at a random moment of its writing (its start-up time varies with the machine).
        assert started.wait(60), "a writer did not start"
        time.sleep(rng.uniform(0.0, window_s))
        writer.kill()
        writer.join()
        reader = LocalCheckpointStore(tmp_path, keep=2)
        state = reader.load_latest()
        assert reader.fallbacks == 0, "a partial or corrupt checkpoint was visible"
        assert torch.equal(state["w"], torch.full((250_000,), float(state["n"])))
    final = LocalCheckpointStore(tmp_path)
    assert final.load_latest()["n"] > 20, "writers got far enough to be killed in every phase"
    assert final.fallbacks == 0
    assert len(list(tmp_path.glob(".ckpt-*.tmp"))) <= 1


def test_a_full_disk_during_torch_save_is_an_oserror(tmp_path, monkeypatch):
    store = LocalCheckpointStore(tmp_path)
    store.save(state(1))

    def full_disk(obj, f, *a, **kw):
        f.write(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 60224 vs 60120"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="checkpoint write failed: RuntimeError"):
        store.save(state(2))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000001.pt"]
    assert store.load_latest()["n"] == 1
