"""map_fields: per-field jobs in order, here or in worker processes, errors naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from la_testutils import write_image

from labelaudit.data.cache import _decode_job
from labelaudit.data.parallel import map_fields
from labelaudit.errors import DatasetError


def fields(tmp_path, n, broken=None):
    jobs, ids = [], []
    for i in range(n):
        path = tmp_path / f"f{i}.png"
        if i != broken:
            write_image(path, np.full((16, 16), i * 10, dtype=np.uint8))
        jobs.append((i, (path,), 1, 8))
        ids.append(f"field{i}")
    return jobs, ids


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_order_here_and_in_processes(tmp_path, workers):
    jobs, ids = fields(tmp_path, 5)
    out = list(map_fields(_decode_job, jobs, ids, workers))
    assert [i for i, _ in out] == list(range(5))
    assert [int(pixels[0, 0, 0]) for _, (pixels, _, _) in out] == [0, 10, 20, 30, 40]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_error_names_the_field_and_file(tmp_path, workers):
    jobs, ids = fields(tmp_path, 4, broken=2)
    with pytest.raises(DatasetError) as err:
        list(map_fields(_decode_job, jobs, ids, workers))
    assert err.value.image == "field2" and "f2.png" in str(err.value.path)
