"""Size and render time of ``report.html`` for 400 and 20,000 synthetic fields.

For each size a run directory is fabricated with random-but-plausible artifacts in
the run-directory contract: HPA 2021 label sets (drawn from the real label table
when ``../shared/hpa-samples`` is there), out-of-fold probabilities that mostly
agree with the true labels, 1280-d embeddings (EfficientNet-lite0's width), channel
statistics, a 5-fold training history, and an image cache entry at 256 px whose
pixels are written (with ``labelaudit.synth.simulate.render_field``) only for the
fields the report embeds, the top few hundred by consensus (the rest of the
memory-mapped file stays sparse). The detectors and the comparison run for real.

Measured: the time of :func:`labelaudit.report.write_report` (read artifacts,
projection, figures, thumbnails, template), the file size and what it is made of,
and, when Chromium and Playwright are installed, the time headless Chromium takes
from navigation to every plot drawn.

Times are the best of ``--repeats`` runs (the development machine is shared).

Usage: ``python benchmarks/report_size.py [--sizes 400 20000] [--max-thumbnails 300]
[--max-details 100] [--repeats 3] [--no-browser]``
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labelaudit.core.io import update_run_json, write_csv, write_json
from labelaudit.data.classes import HPA2021_CLASSES

HERE = Path(__file__).resolve().parent
LABELS = HERE.parent.parent / "shared" / "hpa-samples" / "hpa2021-all-train-labels.csv"
CHANNELS = ("red", "green", "blue", "yellow")
STATS = ("mean", "std", "p99", "saturated", "focus")
K = len(HPA2021_CLASSES)


def label_sets(n: int, rng: np.random.Generator) -> list[list[int]]:
    """HPA 2021 label sets: real rows (with replacement beyond 21,806), else a skewed draw."""
    if LABELS.is_file():
        with open(LABELS, newline="") as fh:
            rows = [r["Label"] for r in csv.DictReader(fh)]
        pick = rng.choice(len(rows), size=n, replace=n > len(rows))
        return [sorted({int(t) for t in rows[i].split("|")}) for i in pick]
    p = np.array([8, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 0.3, 1, 2, 2, 0.5, 5, 2, 0.5])
    return [
        sorted(rng.choice(K, size=rng.integers(1, 4), replace=False, p=p / p.sum()).tolist())
        for _ in range(n)
    ]


def fabricate(root: Path, n: int, *, size: int = 256, dim: int = 1280, top: int = 300) -> Path:
    """A run directory of ``n`` fields under ``root``; returns its path."""
    from labelaudit.pipeline.bench import bench
    from labelaudit.pipeline.compare import detect_and_compare
    from labelaudit.rundir import load_audit_inputs

    rng = np.random.default_rng(n)
    run, cache = root / "run", root / "cache"
    run.mkdir(parents=True)
    cache.mkdir()
    ids = [f"{rng.integers(16**8):08x}-bb{i % 100:02d}-11e8-b2b9-{i:012x}" for i in range(n)]
    truth = label_sets(n, rng)
    given = [list(t) for t in truth]
    noise = ["none"] * n
    for i in rng.choice(n, size=n // 20, replace=False):
        if len(given[i]) > 1:
            given[i].pop()
            noise[i] = "missing"
        else:
            given[i] = sorted({*given[i], int(rng.integers(K))})
            noise[i] = "extra" if len(given[i]) > 1 else "none"
    t = np.zeros((n, K), bool)
    g = np.zeros((n, K), bool)
    for i in range(n):
        t[i, truth[i]] = True
        g[i, given[i]] = True

    write_csv(
        run / "dataset.csv",
        pd.DataFrame({"id": ids, "labels": ["|".join(map(str, x)) for x in given]}),
    )
    stats = {"id": ids, "height": 2048, "width": 2048, "bit_depth": 8}
    level = rng.lognormal(-2.2, 0.3, K)
    for c in CHANNELS:
        base = (t * level).sum(1) / np.maximum(t.sum(1), 1) if c == "green" else 0.08
        mean = np.clip(base * rng.lognormal(0, 0.35, n), 0.001, 0.95)
        stats.update(
            {
                f"{c}_mean": mean,
                f"{c}_std": mean * 1.5,
                f"{c}_p99": np.clip(mean * 6, 0, 1),
                f"{c}_saturated": rng.exponential(1e-4, n),
                f"{c}_focus": rng.lognormal(-7, 0.3, n),
            }
        )
    stats_frame = pd.DataFrame(stats)
    write_csv(run / "image_stats.csv", stats_frame)
    write_csv(cache / "stats.csv", stats_frame)
    write_json(
        cache / "meta.json",
        {"version": 1, "shape": [n, 4, size, size], "size": size, "channels": CHANNELS, "ids": ids},
    )
    np.memmap(cache / "images.u8", dtype=np.uint8, mode="w+", shape=(n, 4, size, size)).flush()
    update_run_json(
        run,
        "dataset",
        {
            "path": str(root / "dataset"),
            "layout": "hpa2021",
            "fingerprint": f"{n:016x}",
            "n_images": n,
            "n_classes": K,
            "class_names": list(HPA2021_CLASSES),
            "class_tokens": [str(k) for k in range(K)],
            "label_sep": "|",
            "channels": list(CHANNELS),
            "protein_channel": "green",
            "cache": str(cache),
            "image_size": size,
        },
    )
    probs = 1 / (1 + np.exp(-(np.where(t, 2.0, -3.0) + rng.normal(0, 1.3, t.shape))))
    oof = pd.DataFrame(probs.round(5), columns=list(HPA2021_CLASSES))
    oof.insert(0, "id", ids)
    write_csv(run / "oof_probs.csv", oof)
    emb = t.astype(np.float32) @ rng.normal(0, 1, (K, dim)).astype(np.float32)
    emb += rng.normal(0, 0.6, (n, dim)).astype(np.float32)
    np.save(run / "embeddings.npy", emb)
    folds = [
        {
            "fold": f,
            "history": [
                {"epoch": e, "train_loss": 0.3 * 0.85**e, "held_out_loss": 0.33 * 0.88**e}
                for e in range(1, 11)
            ],
        }
        for f in range(1, 6)
    ]
    update_run_json(
        run, "train", {"settings": {"backbone": "tf_efficientnet_lite0"}, "folds": folds}
    )

    detect_and_compare(load_audit_inputs(run), run)
    issues = pd.read_csv(run / "issues.csv", dtype=str, keep_default_na=False)
    truth_csv = root / "truth.csv"
    pd.DataFrame(
        {
            "ID": ids,
            "true_label": ["|".join(map(str, x)) for x in truth],
            "given_label": ["|".join(map(str, x)) for x in given],
            "noise": noise,
        }
    ).to_csv(truth_csv, index=False)
    bench(run, truth_csv)
    changed = issues[issues["given_labels"] != issues["suggested_labels"]]
    write_csv(
        run / "changes.csv",
        pd.DataFrame(
            {
                "id": changed["id"],
                "action": "relabel",
                "old_labels": changed["given_labels"],
                "new_labels": changed["suggested_labels"],
                "reason": changed["label_changes"],
            }
        ),
    )
    _paint_top(cache, ids, truth, issues["id"].head(top).tolist(), size)
    return run


def _paint_top(cache: Path, ids: list[str], truth: list[list[int]], top: list[str], size: int):
    """Write synthetic pixels for the fields the report embeds."""
    from labelaudit.synth.simulate import render_field

    images = np.memmap(
        cache / "images.u8", dtype=np.uint8, mode="r+", shape=(len(ids), 4, size, size)
    )
    row = {i: r for r, i in enumerate(ids)}
    rng = np.random.default_rng(0)
    for image_id in top:
        r = row[image_id]
        planes = render_field(truth[r], size, rng)
        images[r] = np.stack([planes[c] for c in CHANNELS])
    images.flush()


def breakdown(page: str) -> dict[str, float]:
    """Megabytes of the page's parts."""
    blocks = dict(
        re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)
    )
    data = json.loads(blocks["report-data"])
    mb = 1e6
    thumbs = sum(len(t) for t in data["thumbs"])
    details = sum(len(d) for d in data["details"])
    return {
        "plotly.js": len(page.split("<script>", 1)[1].split("</script>", 1)[0]) / mb,
        "thumbnails": thumbs / mb,
        "detail tiles": details / mb,
        "table rows": len(json.dumps(data["rows"], separators=(",", ":"))) / mb,
        "probabilities": len(json.dumps(data["probs"], separators=(",", ":"))) / mb,
        "figures": sum(len(v) for k, v in blocks.items() if k.startswith("fig-")) / mb,
        "n_thumbnails": sum(1 for t in data["thumbs"] if t),
        "n_details": sum(1 for d in data["details"] if d),
    }


def browser_seconds(path: Path) -> float | None:
    """Seconds from navigation to every plot drawn in headless Chromium; None without it."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(chromium).exists():
        return None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        start = time.perf_counter()
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=300_000)
        page.wait_for_function(
            "[...document.querySelectorAll('.plot')].every(d => d.querySelector('svg.main-svg'))",
            timeout=300_000,
        )
        seconds = time.perf_counter() - start
        b.close()
    return seconds


def main() -> None:
    from labelaudit.report import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 20_000])
    parser.add_argument("--max-thumbnails", type=int, default=300)
    parser.add_argument("--max-details", type=int, default=100)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many")
    args = parser.parse_args()
    # Import what write_report needs first, so no measurement includes import time.
    import plotly.graph_objects  # noqa: F401
    import sklearn.decomposition  # noqa: F401
    import sklearn.metrics  # noqa: F401

    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run = fabricate(Path(tmp), n, top=args.max_thumbnails)
            setup = time.perf_counter() - start
            times, cpu = [], []
            for _ in range(args.repeats):  # best of: the machine is shared
                start, start_cpu = time.perf_counter(), time.process_time()
                path = write_report(
                    run, max_thumbnails=args.max_thumbnails, max_details=args.max_details
                )
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            seconds = min(times)
            page = path.read_text(encoding="utf-8")
            parts = breakdown(page)
            shown = None
            if not args.no_browser:
                loads = [browser_seconds(path) for _ in range(args.repeats)]
                shown = None if None in loads else min(loads)
            parts["cpu"] = min(cpu)
            results.append((n, len(page.encode()) / 1e6, seconds, shown, parts))
            print(f"n={n}: fabricated in {setup:.1f} s", flush=True)
    print()
    print("| fields | size | write_report wall (CPU) | Chromium: load + draw | thumbs / details |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, size, seconds, shown, parts in results:
        browser = "-" if shown is None else f"{shown:.1f} s"
        print(
            f"| {n:,} | {size:.1f} MB | {seconds:.1f} s ({parts['cpu']:.1f} s) | {browser} | "
            f"{parts['n_thumbnails']} / {parts['n_details']} |"
        )
    print()
    keys = ["plotly.js", "thumbnails", "detail tiles", "table rows", "probabilities", "figures"]
    print("| fields | " + " | ".join(keys) + " |")
    print("| ---: |" + " ---: |" * len(keys))
    for n, _, _, _, parts in results:
        print(f"| {n:,} | " + " | ".join(f"{parts[k]:.2f} MB" for k in keys) + " |")


if __name__ == "__main__":
    main()
