"""An HPA-size audit, stage by stage: wall time and peak memory, and where the time goes.

A synthetic dataset of HPA 2021 size (21,806 fields, 4 stains each, rendered at
reduced resolution) goes through the stages ``labelaudit scan`` runs, in its
order and with the library calls it makes: ``check`` (header pass), ``cache``
(decode + statistics + resize, ``RunDir.write_dataset``), ``train`` (``--mode probe``:
frozen embeddings + 5-fold logistic regression), ``detect`` (the three detectors
and the comparison), ``clean`` and ``report``. Each stage runs in its own child
process, so its peak memory is its own:

- ``peak RSS``: the largest single process (the child or one of its workers),
  from ``os.wait4``'s ``ru_maxrss``;
- ``peak tree RSS``: the child plus its workers together, sampled from
  ``/proc`` every 0.2 s (shared pages, e.g. the cache's memory map, count once
  per process).

Two micro-measurements feed the extrapolation to the real 2048 px set: the real
fields' decode and cache-build time per field (``../shared/hpa-samples``, one
process), and the probe's embedding rate at the ``cpu`` preset's 128 px.

Usage::

    python benchmarks/scale.py                  # 21,806 fields at 32 px (~20 min, 2 loaded cores)
    python benchmarks/scale.py --n 2000         # a quick check
    python benchmarks/scale.py --json out.json  # also write every number

Scratch data goes to ``--work`` (default ``/tmp/labelaudit-scale``); a dataset
already synthesised there with the same ``--n``/``--size``/``--seed`` is reused,
the run and cache directories are new each time (remove them when done).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent.parent / "shared" / "hpa-samples"
HPA_FIELDS = 21_806
STAGES = ("check", "cache", "train", "detect", "clean", "report")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ stages (child side)


def _settings(size: int):
    from labelaudit.core.config import resolve_settings

    # One PyTorch thread: a per-core rate (the extrapolation multiplies it by the
    # cores) that holds on a machine shared with other jobs.
    return resolve_settings(
        "cpu", mode="probe", image_size=size, folds=5, allow_rare=True, progress=False, threads=1
    )


def _load(args) -> tuple[object, dict]:
    from labelaudit.data.layouts import load_dataset

    t = time.perf_counter()
    ds = load_dataset(args.data)
    return ds, {"load_dataset_s": time.perf_counter() - t}


def stage_check(args) -> dict:
    from labelaudit.data.check import check_dataset

    report = check_dataset(args.data)
    return {"errors": len(report.errors), "warnings": len(report.warnings)}


def stage_cache(args) -> dict:
    from labelaudit.data.cache import build_cache
    from labelaudit.rundir import RunDir, ensure_outside

    ds, out = _load(args)
    ensure_outside(ds.root, args.run)
    args.run.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    cache = build_cache(ds, args.size, args.cache)
    out["build_cache_s"] = time.perf_counter() - t
    t = time.perf_counter()
    RunDir(args.run).write_dataset(ds, cache)
    out["record_dataset_s"] = time.perf_counter() - t
    out["reused"] = cache.reused
    out["cache_bytes"] = int(cache.images.nbytes)
    return out


def stage_train(args) -> dict:

    from labelaudit.core.io import read_json
    from labelaudit.data.cache import build_cache
    from labelaudit.train.cv import cross_validate

    ds, out = _load(args)
    cache = build_cache(ds, args.size, args.cache)
    settings = _settings(args.size)
    t = time.perf_counter()
    cv = cross_validate(
        cache.images,
        ds.labels,
        ds.ids,
        ds.class_names,
        settings,
        args.run,
        ds.fingerprint(),
    )
    out["cross_validate_s"] = time.perf_counter() - t
    probe = read_json(args.run / "folds" / "probe" / "state.json")
    out["embed_s"] = probe["seconds"]
    out["logreg_and_write_s"] = out["cross_validate_s"] - probe["seconds"]
    out["micro_f1"] = cv.metrics["micro_f1"]
    out["torch_threads"] = settings.threads
    return out


def stage_detect(args) -> dict:
    from labelaudit.core.io import read_json
    from labelaudit.pipeline.compare import detect_and_compare
    from labelaudit.rundir import load_audit_inputs

    t = time.perf_counter()
    inputs = load_audit_inputs(args.run)
    out = {"load_inputs_s": time.perf_counter() - t}
    detect_and_compare(inputs, args.run)
    run = read_json(args.run / "run.json")
    for name, info in run["detect"]["detectors"].items():
        out[f"{name}_s"] = info["seconds"]
    out["compare_s"] = run["compare"]["seconds"]
    return out


def stage_clean(args) -> dict:
    from labelaudit.pipeline.clean import clean

    result = clean(args.run)
    return {"cleaned": str(result.cleaned_dir)}


def stage_report(args) -> dict:
    from labelaudit.report import write_report

    path = write_report(args.run)
    return {"report_bytes": path.stat().st_size}


def stage_realdecode(args) -> dict:
    """Per file decode and per field cache build of the real fields, one process.

    Wall (best of ``--repeats``) and CPU time (``time.process_time``, what an idle
    core would take; the machine here is shared).
    """
    from labelaudit.data.cache import decode_field
    from labelaudit.data.layouts import load_dataset
    from labelaudit.data.readers import read_array, read_header

    ds = load_dataset(SAMPLES)
    files = [p for s in ds.sources for p in s.paths]
    jobs = {
        "header": lambda: [read_header(p) for p in files],
        "decode": lambda: [read_array(p) for p in files],
        "field": lambda: [decode_field(tuple(s.paths), len(ds.channels), 128) for s in ds.sources],
    }
    wall = dict.fromkeys(jobs, 1e9)
    cpu = dict.fromkeys(jobs, 1e9)
    for _ in range(args.repeats):
        for name, job in jobs.items():
            t, c = time.perf_counter(), time.process_time()
            job()
            wall[name] = min(wall[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
    return {
        "fields": len(ds),
        "files": len(files),
        "mb_per_file": sum(p.stat().st_size for p in files) / len(files) / 1e6,
        "header_ms_per_file": 1e3 * wall["header"] / len(files),
        "decode_ms_per_file": 1e3 * wall["decode"] / len(files),
        "cache_ms_per_field": 1e3 * wall["field"] / len(ds),
        "decode_cpu_ms_per_file": 1e3 * cpu["decode"] / len(files),
        "cache_cpu_ms_per_field": 1e3 * cpu["field"] / len(ds),
        "decode_share": wall["decode"] / wall["field"],
    }


def stage_embedrate(args) -> dict:
    """Probe embedding rate (images/s, 4 TTA views) at ``--size`` and at 128 px, back to back.

    The ratio of the two is what carries the measured ``train`` stage to the
    ``cpu`` preset's 128 px; measured together, it holds under a varying load.
    """
    import numpy as np
    import torch

    from labelaudit.train.backbones import build_model, channel_mean_std
    from labelaudit.train.loop import make_runtime
    from labelaudit.train.probe import embed_all
    from labelaudit.train.weights import resolve_weights

    torch.set_num_threads(1)
    out: dict = {"torch_threads": torch.get_num_threads()}
    rng = np.random.default_rng(0)
    for size in (args.size, 128):
        settings = _settings(size)
        images = rng.integers(0, 255, (128, 4, size, size), dtype=np.uint8)
        runtime = make_runtime(settings)
        weights = resolve_weights(settings, 4)
        model = build_model(settings.backbone, 4, 19, channel_mean_std(images), weights)
        embed_all(model, images[:32], settings.batch_size, runtime, tta=settings.tta)  # warm-up
        t, c = time.perf_counter(), time.process_time()
        embed_all(model, images, settings.batch_size, runtime, tta=settings.tta)
        out[f"images_per_s_{size}"] = len(images) / (time.perf_counter() - t)
        out[f"images_per_cpu_s_{size}"] = len(images) / (time.process_time() - c)
    out["slowdown_128"] = out[f"images_per_s_{args.size}"] / out["images_per_s_128"]
    return out


CHILD = {
    "check": stage_check,
    "cache": stage_cache,
    "train": stage_train,
    "detect": stage_detect,
    "clean": stage_clean,
    "report": stage_report,
    "realdecode": stage_realdecode,
    "embedrate": stage_embedrate,
}


# ------------------------------------------------------------------ measuring (parent side)


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_stage(name: str, args) -> dict:
    """Run one stage in a child process; its wall time, peak memory and breakdown."""
    cmd = [sys.executable, __file__, "--stage", name, *_child_args(args)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_tree, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.wait(0.2):
            peak_tree = max(peak_tree, _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed (exit {proc.returncode})")
    detail = json.loads(output.strip().splitlines()[-1])
    return {
        "stage": name,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "peak_tree_rss_mb": max(peak_tree, usage.ru_maxrss * 1024) / 2**20,
        "detail": detail,
    }


def _child_args(args) -> list[str]:
    return ["--data", str(args.data), "--run", str(args.run), "--cache", str(args.cache),
            "--size", str(args.size), "--repeats", str(args.repeats)]  # fmt: skip


def synthesize_once(args) -> float | None:
    """Write the synthetic dataset unless the same one is there; seconds or None."""
    done = args.data / ".scale-done"
    want = f"{args.n} {args.size} {args.seed}"
    if done.is_file() and done.read_text() == want:
        return None
    if args.data.exists():
        raise SystemExit(f"{args.data} exists and is not this benchmark's dataset: remove it")
    from labelaudit.synth.simulate import synthesize

    t = time.perf_counter()
    synthesize(args.data, n=args.n, size=args.size, seed=args.seed)
    done.write_text(want)
    return time.perf_counter() - t


# ------------------------------------------------------------------ extrapolation


def extrapolate(
    rows: dict[str, dict], real: dict, embed: dict, n: int, size: int, cores: int
) -> dict:
    """Seconds per stage for 21,806 real fields (2048 px) cached at 128 px on ``cores`` cores.

    The machine here is shared, so CPU seconds (what an idle core takes) are the
    base, not wall time. Work labelaudit spreads over the cores is divided by
    them as if it scaled linearly (an upper bound on the speed-up): the cache
    build (one decoding process per core; the real fields' CPU time per field)
    and the probe's embedding (PyTorch threads; the CPU rate at 128 px measured
    with one thread). Everything else runs in one process and keeps its CPU
    seconds, scaled by N: ``check``'s pass over the files, the cache's dataset
    load and bookkeeping, the probe's 5 x 19 logistic regressions (CPU of the
    train stage minus its embedding), the detectors, clean and the report.
    """
    scale = HPA_FIELDS / n
    cache = rows["cache"]["detail"]
    embed_here = n / embed[f"images_per_cpu_s_{size}"]
    return {
        "check": rows["check"]["cpu_s"] * scale,
        "cache: decode + stats + resize (parallel)": HPA_FIELDS
        * real["cache_cpu_ms_per_field"]
        / 1e3
        / cores,
        "cache: load dataset + record (serial)": (
            cache["load_dataset_s"] + cache["record_dataset_s"]
        )
        * scale,
        "train: embed at 128 px (parallel)": HPA_FIELDS / embed["images_per_cpu_s_128"] / cores,
        "train: logistic regressions (serial)": max(0.0, rows["train"]["cpu_s"] - embed_here)
        * scale,
        "detect": rows["detect"]["cpu_s"] * scale,
        "clean": rows["clean"]["cpu_s"] * scale,
        "report": rows["report"]["cpu_s"] * scale,
    }


# ------------------------------------------------------------------ output


def _commit() -> str:
    proc = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return proc.stdout.strip()


def table(rows: list[dict], n: int, size: int) -> str:
    lines = [
        f"N = {n} fields x 4 stains, {size} px",
        "| stage | wall s | CPU s | peak RSS MB | peak tree RSS MB | where the time goes |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        parts = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in r["detail"].items()
            if k.endswith("_s") or k in ("errors", "torch_threads")
        )
        lines.append(
            f"| {r['stage']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['peak_tree_rss_mb']:.0f} | {parts} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=HPA_FIELDS, help="fields (HPA 2021: 21806)")
    parser.add_argument("--size", type=int, default=32, help="synthetic field and cache px")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/labelaudit-scale"))
    parser.add_argument("--cores", type=int, default=16, help="extrapolate to this many")
    parser.add_argument("--repeats", type=int, default=3, help="real-field decode repeats")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--stage", choices=sorted(CHILD), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("LABELAUDIT_OFFLINE", "1")

    if args.stage:  # child: one stage, one JSON line on stdout
        print(json.dumps(CHILD[args.stage](args)), flush=True)
        return

    tag = f"n{args.n}-s{args.size}-seed{args.seed}"
    args.data = args.work / f"data-{tag}"
    # A fresh run and cache directory each time: a reused cache or probe would time nothing.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.run = args.work / f"run-{tag}-{stamp}"
    args.cache = args.work / f"cache-{tag}-{stamp}"
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    synth_s = synthesize_once(args)
    if synth_s is not None:
        print(f"synthesised {args.n} fields at {args.size} px in {synth_s:.0f} s", flush=True)

    rows = []
    for name in args.stages.split(","):
        row = run_stage(name, args)
        rows.append(row)
        print(
            f"{name}: {row['wall_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB "
            f"(tree {row['peak_tree_rss_mb']:.0f} MB) {json.dumps(row['detail'])}",
            flush=True,
        )
    real = run_stage("realdecode", args)
    embed = run_stage("embedrate", args)
    print(f"real fields: {json.dumps(real['detail'])}")
    print(f"embedding rates: {json.dumps(embed['detail'])}")
    print()
    print(table(rows, args.n, args.size))
    by_name = {r["stage"]: r for r in rows}
    result = {
        "n": args.n,
        "size": args.size,
        "seed": args.seed,
        "cores_here": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "synth_s": synth_s,
        "stages": rows,
        "real_fields": real["detail"],
        "embedding_rates": embed["detail"],
        "commit": _commit(),
        "peak_children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if set(STAGES) <= set(by_name):
        ext = extrapolate(by_name, real["detail"], embed["detail"], args.n, args.size, args.cores)
        result["extrapolated_s"] = ext
        print(
            f"\nextrapolated to {HPA_FIELDS} real fields (2048 px -> 128 px), {args.cores} cores:"
        )
        total = 0.0
        for k, v in ext.items():
            total += v
            print(f"  {k}: {v:.0f} s")
        print(f"  total: {total:.0f} s ({total / 60:.1f} min)")
    print(f"load average before {load_before}, after {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
