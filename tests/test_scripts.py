"""labelaudit from a plain script (no ``__main__`` guard) and from a Jupyter kernel.

Worker processes are spawned; a plain spawn child re-runs the user's script, so an
unguarded script used to crash (``BrokenProcessPool``) or hang. These tests run the
README's Python snippets and a worker-using script as a user would: a file run by a
fresh interpreter, and cells run by a real IPython kernel.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from la_testutils import REPO

#: Tiny settings for the README's scan call (the README shows the cpu preset).
README_SCAN = 'preset="cpu"'
TINY_SCAN = 'preset="demo", epochs=1, folds=2, image_size=32'


def readme_python() -> str:
    """The README's Python snippets, in order, as one script."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python snippet"
    return "\n".join(blocks)


def run_script(path: Path, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABELAUDIT_CACHE_DIR=str(cwd / "cache"))
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tiny_dataset(tmp_path):
    import labelaudit

    root = tmp_path / "dataset"
    labelaudit.synthesize(root, n=24, size=48, noise_rate=0.2, seed=3)
    return root


@pytest.mark.slow
def test_workers_from_an_unguarded_script(tmp_path, tiny_dataset):
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import labelaudit

            print("top of the script")
            ds = labelaudit.load_dataset({str(tiny_dataset)!r})
            report = labelaudit.check_dataset({str(tiny_dataset)!r}, deep=True, workers=2)
            cache = labelaudit.build_cache(ds, size=32, cache_dir="cache", workers=2)
            print("cached", cache.images.shape, "errors", len(report.errors))
            """
        )
    )
    proc = run_script(script, tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "cached (24, 4, 32, 32) errors 0" in proc.stdout
    # The workers did not run the script again.
    assert proc.stdout.count("top of the script") == 1
    assert "bootstrapping" not in proc.stderr


@pytest.mark.slow
def test_readme_snippets_run_as_an_unguarded_script(tmp_path, tiny_dataset):
    code = readme_python()
    assert "if __name__" not in code
    assert README_SCAN in code, "the README's scan call changed: update README_SCAN"
    code = code.replace(README_SCAN, TINY_SCAN).replace("path/to/dataset", str(tiny_dataset))
    script = tmp_path / "readme.py"
    script.write_text(code + "\nprint('README snippets done')\n")
    proc = run_script(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.rstrip().endswith("README snippets done"), proc.stdout[-2000:]
    assert "bootstrapping" not in proc.stderr
    assert "no images given" in proc.stdout  # find_issues on arrays ran and said so
    assert (tmp_path / "path" / "to" / "run" / "report.html").is_file()
    assert "labelaudit report" in (tmp_path / "audit.html").read_text()


@pytest.mark.slow
def test_readme_snippets_run_in_a_jupyter_kernel(tmp_path, tiny_dataset):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    code = readme_python().replace(README_SCAN, TINY_SCAN)
    code = code.replace("path/to/dataset", str(tiny_dataset))
    cells = [
        nbformat.v4.new_code_cell(
            "import os\n"
            f"os.environ['LABELAUDIT_CACHE_DIR'] = {str(tmp_path / 'cache')!r}\n"
            f"os.chdir({str(tmp_path)!r})"
        ),
        nbformat.v4.new_code_cell(code),
        nbformat.v4.new_code_cell(
            "more = labelaudit.build_cache(ds, size=24, cache_dir='cache2', workers=2)\n"
            "print('kernel done', more.images.shape)"
        ),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    outputs = [
        o.get("text", "")
        for cell in notebook.cells
        for o in cell.outputs
        if o.output_type == "stream"
    ]
    text = "".join(outputs)
    assert "kernel done (24, 4, 24, 24)" in text
    assert "no images given" in text  # find_issues on arrays ran in the kernel
    assert "labelaudit report" in (tmp_path / "audit.html").read_text()
