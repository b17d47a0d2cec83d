"""A rich progress bar per fold: epoch, loss, images/s and time left."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from labelaudit.train.loop import ProgressFn


@contextlib.contextmanager
def fold_progress(
    console: Console | None, title: str, enabled: bool = True
) -> Iterator[ProgressFn]:
    """Yield a progress callback for :func:`labelaudit.train.loop.train_fold`.

    Silent when ``console`` is ``None``, quiet or not a terminal (a log file gets the
    one-line fold summaries only), or ``enabled`` is False. The bar
    counts optimisation steps over the planned epochs; early stopping completes it.
    """
    if console is None or console.quiet or not enabled or not console.is_terminal:
        yield lambda _event, _info: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    state: dict = {"task": None, "epochs": 1, "steps": 1, "last": ""}

    def update(event: str, info: dict) -> None:
        if event == "start":
            state.update(epochs=info["epochs"], steps=max(info["steps"], 1))
            state["task"] = bar.add_task(title, total=state["epochs"] * state["steps"], status="")
        elif event == "step":
            done = (info["epoch"] - 1) * state["steps"] + info["step"]
            status = (
                f"epoch {info['epoch']}/{state['epochs']}  loss {info['loss']:.4f}  "
                f"{info['rate']:.0f} img/s{state['last']}"
            )
            bar.update(state["task"], completed=done, status=status)
        elif event == "epoch":
            state["last"] = f"  held-out {info['held_out_loss']:.4f} (best ep {info['best_epoch']})"
        elif event == "done":
            bar.update(state["task"], completed=state["epochs"] * state["steps"])

    with bar:
        yield update
