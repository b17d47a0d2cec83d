"""Fixtures of the cell tests: known synthetic fields and datasets made of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cellfields import known_field
from la_testutils import CHANNELS, write_image


@pytest.fixture
def known() -> tuple[dict[str, np.ndarray], np.ndarray]:
    return known_field()


@pytest.fixture
def make_cells_dataset(tmp_path) -> Callable[..., tuple[Path, dict[str, np.ndarray]]]:
    """An HPA-layout dataset of known fields; returns its root and the true masks."""

    def make(n: int = 3, name: str = "cellds") -> tuple[Path, dict[str, np.ndarray]]:
        root = tmp_path / name
        truth = {}
        for k in range(n):
            image_id = f"f{k}"
            channels, labels = known_field(seed=k)
            if k % 2:  # variety: the same cells, mirrored
                channels = {c: np.ascontiguousarray(a[:, ::-1]) for c, a in channels.items()}
                labels = np.ascontiguousarray(labels[:, ::-1])
            for c in CHANNELS:
                write_image(root / "train" / f"{image_id}_{c}.png", channels[c])
            truth[image_id] = labels
        lines = ["ID,Label"] + [f"f{k},{k % 19}" for k in range(n)]
        (root / "train.csv").write_text("\n".join(lines) + "\n")
        return root, truth

    return make
