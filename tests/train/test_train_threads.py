"""Automatic CPU thread count: never more threads than idle cores."""

from __future__ import annotations

from labelaudit.train import threads


def test_auto_threads_bounds(monkeypatch):
    assert 1 <= threads.auto_threads(4, sample_s=0.05) <= 4
    monkeypatch.setattr(threads, "idle_cores", lambda sample_s=0.3: 0.2)
    assert threads.auto_threads(2) == 1
    monkeypatch.setattr(threads, "idle_cores", lambda sample_s=0.3: 7.6)
    assert threads.auto_threads(2) == 2
    monkeypatch.setattr(threads, "idle_cores", lambda sample_s=0.3: None)
    assert threads.auto_threads(3) == 3
