"""The image cache survives interruptions, collects every broken file, builds once at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from la_testutils import write_image

from labelaudit.core.locks import hold_lock
from labelaudit.data import cache as cache_mod
from labelaudit.data.cache import BrokenImages, build_cache, subset_dataset
from labelaudit.data.layouts import load_dataset

# A cache build in a separate process, slowed down so a test can stop it midway.
SLOW_BUILD = """
import json, sys, time
from labelaudit.data import cache as C
from labelaudit.data.layouts import load_dataset

C.FLUSH_FIELDS = 1  # journal every field: the test watches it
decode = C.decode_field
def slow(*args, **kwargs):
    time.sleep(float(sys.argv[3]))
    return decode(*args, **kwargs)
C.decode_field = slow
got = C.build_cache(load_dataset(sys.argv[1]), 16, sys.argv[2], workers=1,
                    on_wait=lambda line: print("WAIT", line, flush=True))
print(json.dumps({"reused": got.reused, "resumed": got.resumed, "path": str(got.path)}))
"""


def _start_build(tmp_path: Path, root: Path, cache_dir: Path, delay: float) -> subprocess.Popen:
    script = tmp_path / "slow_build.py"
    script.write_text(SLOW_BUILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(root), str(cache_dir), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _journal_lines(cache_dir: Path) -> int:
    journals = list(cache_dir.glob(".partial-*/journal.jsonl"))
    if not journals:
        return 0
    return journals[0].read_text().count("\n")


def _count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    decode = cache_mod.decode_field

    def counting(*args, **kwargs):
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "decode_field", counting)
    return calls


def _leftovers(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if p.name.startswith((".tmp-", ".partial-")))


def test_sigkill_midway_then_rerun_reuses_the_decoded_fields(make_hpa, tmp_path, monkeypatch):
    root = make_hpa(n=30, size=32)
    cache_dir = tmp_path / "c"
    proc = _start_build(tmp_path, root, cache_dir, delay=0.1)
    deadline = time.monotonic() + 60
    while _journal_lines(cache_dir) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no clean-up of any kind
    proc.wait(timeout=10)
    assert proc.returncode == -9, "the build finished before it could be killed"
    journaled = _journal_lines(cache_dir)
    assert 6 <= journaled < 30

    calls = _count_decodes(monkeypatch)
    ds = load_dataset(root)
    again = build_cache(ds, 16, cache_dir, workers=1)
    assert not again.reused and journaled <= again.resumed < 30
    assert len(calls) == 30 - again.resumed  # only the missing fields were decoded
    assert _leftovers(cache_dir) == []  # the partial entry became the entry

    clean = build_cache(ds, 16, tmp_path / "clean", workers=1)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(clean.images))
    assert again.stats.equals(clean.stats)
    assert again.ids == clean.ids


def test_a_changed_file_is_decoded_again_on_resume(make_hpa, tmp_path, monkeypatch):
    root = make_hpa(n=6, size=32)
    path = root / "train" / "field003_red.png"
    path.write_bytes(b"")  # broken: the build keeps its partial entry
    with pytest.raises(BrokenImages):
        build_cache(load_dataset(root), 16, tmp_path / "c", workers=1)
    write_image(path, np.full((32, 32), 77, np.uint8))  # fixed
    calls = _count_decodes(monkeypatch)
    got = build_cache(load_dataset(root), 16, tmp_path / "c", workers=1)
    assert len(calls) == 1 and got.resumed == 5
    assert got.images[3, 0].min() == 77 == got.images[3, 0].max()


def _break_three(root: Path) -> dict[str, str]:
    train = root / "train"
    truncated = train / "field001_green.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    (train / "field004_blue.png").write_bytes(b"")
    (train / "field006_red.png").write_bytes(os.urandom(300))
    return {
        "field001": "field001_green.png",
        "field004": "field004_blue.png",
        "field006": "field006_red.png",
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_every_broken_file_named_in_one_error(make_hpa, tmp_path, workers):
    root = make_hpa(n=10, size=32)
    broken = _break_three(root)
    with pytest.raises(BrokenImages) as info:
        build_cache(load_dataset(root), 16, tmp_path / "c", workers=workers)
    lines = str(info.value).splitlines()
    assert len(lines) == 4 and lines[0].startswith("3 image(s) cannot be read")
    for line, (image_id, name) in zip(lines[1:], broken.items(), strict=True):
        assert name in line and repr(image_id) in line
    assert [b["id"] for b in info.value.broken] == list(broken)
    assert all(b["reason"] for b in info.value.broken)


def test_skip_broken_serves_the_readable_images_without_decoding_again(
    make_hpa, tmp_path, monkeypatch
):
    root = make_hpa(n=10, size=32)
    broken = _break_three(root)
    ds = load_dataset(root)
    with pytest.raises(BrokenImages):
        build_cache(ds, 16, tmp_path / "c", workers=1)
    calls = _count_decodes(monkeypatch)
    got = build_cache(ds, 16, tmp_path / "c", workers=1, skip_broken=True)
    assert calls == []  # the failed build's fields were reused
    assert [s["id"] for s in got.skipped] == list(broken)
    readable = subset_dataset(ds, got.ids)
    assert got.ids == [i for i in ds.ids if i not in broken] == readable.ids
    assert got.images.shape[0] == 7 and list(got.stats["id"]) == got.ids
    np.testing.assert_array_equal(readable.labels, ds.labels[[ds.ids.index(i) for i in got.ids]])
    # The same pixels as a cache of a dataset without those images.
    alone = build_cache(readable, 16, tmp_path / "alone", workers=1)
    np.testing.assert_array_equal(np.asarray(got.images), np.asarray(alone.images))
    again = build_cache(ds, 16, tmp_path / "c", workers=1, skip_broken=True)
    assert again.reused and again.path == got.path and again.skipped == got.skipped


def test_stale_temporary_entries_removed_only_when_unlocked(make_hpa, tmp_path):
    cache_dir = tmp_path / "c"
    dead = cache_dir / ".tmp-cells-abc-999999"  # a builder killed mid-way
    busy = cache_dir / ".tmp-cells-def-1"  # a builder still at work (holds the lock)
    old_partial = cache_dir / ".partial-0123"
    for d in (dead, busy, old_partial):
        d.mkdir(parents=True)
        (d / "images.u8").write_bytes(b"x" * 100)
    week = time.time() - 8 * 24 * 3600
    os.utime(old_partial, (week, week))
    with hold_lock(cache_dir / "cells-def.lock", "test"):
        build_cache(load_dataset(make_hpa(n=2, size=16)), 8, cache_dir, workers=1)
    assert not dead.exists() and not old_partial.exists()
    assert busy.exists()


@pytest.mark.slow
def test_concurrent_builders_one_waits_then_reuses(make_hpa, tmp_path):
    root = make_hpa(n=20, size=32)
    cache_dir = tmp_path / "c"
    first = _start_build(tmp_path, root, cache_dir, delay=0.3)
    deadline = time.monotonic() + 60
    while _journal_lines(cache_dir) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    second = _start_build(tmp_path, root, cache_dir, delay=0.3)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 == second.returncode, err1 + err2
    r1 = json.loads(out1.splitlines()[-1])
    r2 = json.loads(out2.splitlines()[-1])
    assert not r1["reused"] and r2["reused"] and r1["path"] == r2["path"]
    assert "WAIT waiting for process" in out2  # it said whom it waited for
    assert _leftovers(cache_dir) == []


def test_staged_entry_second_builder_waits_then_finds_the_entry(tmp_path):
    import threading

    from labelaudit.data.cache import staged_entry

    final = tmp_path / "c" / "cells-abc"
    inside = threading.Event()

    def first() -> None:
        with staged_entry(final) as tmp:
            (tmp / "meta.json").write_text("{}")
            inside.set()
            time.sleep(0.5)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    waited: list[str] = []
    with staged_entry(final, on_wait=waited.append) as tmp:
        assert (final / "meta.json").is_file()  # the first builder finished meanwhile
        (tmp / "meta.json").write_text('{"second": true}')
    thread.join()
    assert waited and "waiting for process" in waited[0]
    assert (final / "meta.json").read_text() == "{}"  # the first entry is kept
    assert _leftovers(final.parent) == []
