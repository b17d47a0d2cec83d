"""Planted near-duplicates on three sets, found by labelaudit, cleanvision and Datalab.

Three base sets, each with copies planted at full resolution (the files a user has):

* ``synth``: ``labelaudit synth`` fields (HPA layout, four stains);
* ``realpix``: ``benchmarks/realpix.py`` (scikit-image photographs as stains);
* ``lowinfo``: a sparse, low-information single-channel set made here: 32-px tiles of
  scikit-image's ``hubble_deep_field`` (few small objects on a dark, noisy background;
  its native scale and a half scale), upsampled to 64 px with camera noise added
  (generic layout). scikit-image's microscopy samples with dark backgrounds
  (``cells3d``, ``human_mitosis``, ``kidney``) need a download, so none of them.

Copies of ``--copies`` originals are planted, made in turn by: a shift of 1-4 px with
fresh camera noise; a JPEG re-encode (quality 60-90); a crop of 2-6 % per side
(a different share per side, so the aspect changes too) with fresh noise; a crop and
a JPEG re-encode. A fifth of the originals get two copies (groups of three), a third of
the copies get changed labels. A planted pair is any two images of one planted group.

Each tool sees the same files:

* labelaudit: :func:`labelaudit.detect.duplicates.find_duplicates` on the image cache
  (``--cache-size``; pairs = its verified pairs, groups = ``duplicate_group``);
* cleanvision ``Imagelab`` exact and near duplicates (its perceptual hashes) on the
  image files (HPA fields as RGB composites of red, green and blue);
* cleanlab ``Datalab`` ``near_duplicate`` on pixel features (the cached field
  area-averaged to 16 x 16 per channel, flattened): no model is trained here, so it gets
  the pixels instead of a run's embeddings.

Usage (the peers need ``pip install -e .[bench]``)::

    python benchmarks/duplicates.py OUT [--sets synth,realpix,lowinfo] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

HPA = ("red", "green", "blue", "yellow")
KINDS = ("shift", "jpeg", "crop", "crop+jpeg")


# ----------------------------------------------------------------- the sets


def make_lowinfo(out: Path, n: int = 1000, seed: int = 0) -> None:
    """Sparse single-channel tiles (generic layout: ``labels.csv`` + ``img/*.png``)."""
    import cv2
    import skimage.data as d

    rng = np.random.default_rng(seed)
    sky = d.hubble_deep_field()[..., 0].astype(np.float32)
    tiles = []
    for scale in (1.0, 0.5):
        img = sky if scale == 1.0 else cv2.resize(sky, None, fx=scale, fy=scale)
        h, w = img.shape
        for y, x in itertools.product(range(0, h - 31, 32), range(0, w - 31, 32)):
            tiles.append(img[y : y + 32, x : x + 32])
    order = rng.permutation(len(tiles))[:n]
    (out / "img").mkdir(parents=True)
    rows = []
    for k, t in enumerate(order):
        big = cv2.resize(tiles[t], (64, 64), interpolation=cv2.INTER_LINEAR)
        pix = np.clip(np.rint(6 + 0.8 * big + rng.normal(0, 1.5, big.shape)), 0, 255)
        name = f"img/tile{k:04d}.png"
        Image.fromarray(pix.astype(np.uint8)).save(out / name)
        rows.append((name, str(int(rng.integers(10)))))
    pd.DataFrame(rows, columns=["image", "labels"]).to_csv(out / "labels.csv", index=False)


def make_base(name: str, out: Path, seed: int, n: int | None) -> None:
    if name == "synth":
        from labelaudit.synth.simulate import synthesize

        synthesize(out, n=n or 300, size=128, seed=seed)
    elif name == "realpix":
        sys.path.insert(0, str(Path(__file__).parent))
        from realpix import make_realpix

        make_realpix(out, n=n or 200, size=128, seed=seed)
    else:
        make_lowinfo(out, n=n or 1000, seed=seed)


# ----------------------------------------------------------------- planting


def _jpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def make_copy(channels: list[np.ndarray], kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """One copy of a field's channels (uint8, one shape), made ``kind``'s way."""
    h, w = channels[0].shape
    out = [c.astype(np.float32) for c in channels]
    noisy = kind in ("shift", "crop")
    if kind == "shift":
        s = max(1, max(h, w) // 32)
        dy, dx = 0, 0
        while dy == 0 and dx == 0:
            dy, dx = (int(v) for v in rng.integers(-s, s + 1, 2))
        out = [np.pad(c, s, mode="reflect")[s + dy : s + dy + h, s + dx : s + dx + w] for c in out]
    if kind.startswith("crop"):
        top, bottom, left, right = (int(round(f * h)) for f in rng.uniform(0.02, 0.06, 4))
        out = [c[top : h - bottom, left : w - right] for c in out]
    if noisy:
        out = [c + rng.normal(0.0, 2.0, c.shape) for c in out]
    out = [np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in out]
    if kind.endswith("jpeg"):
        q = int(rng.integers(60, 91))
        out = [_jpeg(c, q) for c in out]
    return out


def plant(root: Path, name: str, copies: int, seed: int) -> list[set[str]]:
    """Append copies to the dataset at ``root``; returns the planted groups (ids)."""
    rng = np.random.default_rng(seed + 1000)
    hpa = name != "lowinfo"
    table = pd.read_csv(root / ("train.csv" if hpa else "labels.csv"), dtype=str)
    id_col, lab_col = ("ID", "Label") if hpa else ("image", "labels")
    tokens = sorted({t for v in table[lab_col] for t in str(v).split("|" if hpa else " ")})
    n_orig = max(1, round(copies / 1.2))
    originals = rng.choice(len(table), n_orig, replace=False)
    twice = set(originals[: n_orig // 5].tolist())
    groups, new_rows, k = [], [], 0
    for row in originals:
        src_id, src_lab = table[id_col][row], table[lab_col][row]
        chans = (
            [np.asarray(Image.open(root / "train" / f"{src_id}_{c}.png")) for c in HPA]
            if hpa
            else [np.asarray(Image.open(root / src_id))]
        )
        members = {src_id}
        for _ in range(2 if row in twice else 1):
            kind = KINDS[k % len(KINDS)]
            made = make_copy(chans, kind, rng)
            label = src_lab
            if k % 3 == 2:  # changed labels
                label = str(rng.choice([t for t in tokens if t != src_lab.split("|")[0]]))
            if hpa:
                new_id = f"copy{k:03d}-{kind.replace('+', '-')}"
                for c, arr in zip(HPA, made, strict=True):
                    Image.fromarray(arr).save(root / "train" / f"{new_id}_{c}.png")
            else:
                suffix = ".jpg" if kind.endswith("jpeg") else ".png"
                new_id = f"img/copy{k:03d}-{kind.replace('+', '-')}{suffix}"
                if suffix == ".jpg":  # saved as a JPEG file: PNG to JPEG
                    Image.fromarray(chans[0] if kind == "jpeg" else made[0]).save(
                        root / new_id, quality=int(rng.integers(60, 91))
                    )
                else:
                    Image.fromarray(made[0]).save(root / new_id)
            new_rows.append((new_id, label))
            members.add(new_id)
            k += 1
        groups.append(members)
    extra = pd.DataFrame(new_rows, columns=[id_col, lab_col])
    pd.concat([table, extra], ignore_index=True).to_csv(
        root / ("train.csv" if hpa else "labels.csv"), index=False
    )
    return groups


# ----------------------------------------------------------------- scoring


def pair_set(groups: list[set[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for g in groups for p in itertools.combinations(sorted(g), 2)}


def score(found: set[tuple[str, str]], truth: set[tuple[str, str]]) -> tuple[float, float]:
    hit = len(found & truth)
    return hit / max(len(truth), 1), (hit / len(found) if found else 1.0)


def run_labelaudit(ds, cache) -> dict:
    from labelaudit.detect.base import AuditInputs
    from labelaudit.detect.duplicates import find_duplicates, pixel_keys

    t = time.perf_counter()
    images = np.asarray(cache.images)
    keys = pixel_keys(images, cache.stats)
    inputs = AuditInputs(
        ds.ids, ds.class_names, ds.class_names, "|", np.asarray(ds.labels, dtype=bool)
    )
    dups = find_duplicates(inputs, images=images, keys=keys)
    seconds = time.perf_counter() - t
    found = {tuple(sorted(p)) for p in dups.pairs[["a", "b"]].values.tolist()}
    sizes = np.bincount(dups.group[dups.group >= 0]) if (dups.group >= 0).any() else [0]
    return {"pairs": found, "largest": int(max(sizes)), "seconds": seconds,
            "low": int(dups.low_information.sum())}  # fmt: skip


def _files(root: Path, name: str, ids: list[str], tmp: Path) -> list[str]:
    """One image file per field for cleanvision (HPA: an RGB composite)."""
    if name == "lowinfo":
        return [str(root / i) for i in ids]
    tmp.mkdir(parents=True, exist_ok=True)
    out = []
    for i in ids:
        rgb = np.stack(
            [np.asarray(Image.open(root / "train" / f"{i}_{c}.png")) for c in HPA[:3]], axis=-1
        )
        path = tmp / f"{i}.png"
        Image.fromarray(rgb).save(path)
        out.append(str(path))
    return out


def run_cleanvision(files: list[str], ids: list[str]) -> dict:
    from cleanvision import Imagelab

    t = time.perf_counter()
    lab = Imagelab(filepaths=files)
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, verbose=False)
    seconds = time.perf_counter() - t
    where = {f: i for f, i in zip(files, ids, strict=True)}
    found, largest = set(), 0
    for kind in ("exact_duplicates", "near_duplicates"):
        for group in lab.info.get(kind, {}).get("sets", []):
            members = sorted(where[str(f)] for f in group)
            largest = max(largest, len(members))
            found |= {tuple(p) for p in itertools.combinations(members, 2)}
    return {"pairs": found, "largest": largest, "seconds": seconds}


def run_datalab(cache, ids: list[str], labels: np.ndarray) -> dict:
    import cv2
    from cleanlab import Datalab

    images = np.asarray(cache.images, dtype=np.float32)
    n, c, s, _ = images.shape
    feats = np.stack(
        [
            np.concatenate(
                [cv2.resize(ch, (16, 16), interpolation=cv2.INTER_AREA).ravel() for ch in img]
            )
            for img in images
        ]
    )
    t = time.perf_counter()
    lab = Datalab(data={"label": labels.argmax(axis=1)}, label_name="label", verbosity=0)
    lab.find_issues(features=feats, issue_types={"near_duplicate": {}})
    seconds = time.perf_counter() - t
    sets = lab.get_issues("near_duplicate")
    info = lab.get_info("near_duplicate")["near_duplicate_sets"]
    found = set()
    for r, others in enumerate(info):
        if sets["is_near_duplicate_issue"].iloc[r]:
            found |= {tuple(sorted((ids[r], ids[int(o)]))) for o in others}
    largest = 1 + max((len(o) for o in info), default=0) if found else 0
    return {"pairs": found, "largest": largest, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sets", default="synth,realpix,lowinfo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copies", type=int, default=0, help="copies (default: by set)")
    parser.add_argument("--cache-size", type=int, default=128)
    parser.add_argument("--no-peers", action="store_true", help="labelaudit only")
    args = parser.parse_args()

    from labelaudit.data.cache import build_cache
    from labelaudit.data.layouts import load_dataset

    rows = []
    for name in args.sets.split(","):
        root = args.out / f"{name}-{args.seed}"
        if not root.exists():
            make_base(name, root, args.seed, None)
            groups = plant(root, name, args.copies or {"lowinfo": 40}.get(name, 30), args.seed)
            pd.DataFrame({"group": [";".join(sorted(g)) for g in groups]}).to_csv(
                root.parent / f"{name}-{args.seed}.groups.csv", index=False
            )
        groups = [
            set(v.split(";"))
            for v in pd.read_csv(root.parent / f"{name}-{args.seed}.groups.csv")["group"]
        ]
        truth = pair_set(groups)
        ds = load_dataset(root)
        size = min(args.cache_size, 64) if name == "lowinfo" else args.cache_size
        cache = build_cache(ds, size, args.out / "cache")
        results = {"labelaudit": run_labelaudit(ds, cache)}
        if not args.no_peers:
            files = _files(root, name, list(ds.ids), args.out / "composites" / root.name)
            results["cleanvision"] = run_cleanvision(files, list(ds.ids))
            results["Datalab near_duplicate"] = run_datalab(
                cache, list(ds.ids), np.asarray(ds.labels)
            )
        biggest = max(len(g) for g in groups)
        for tool, res in results.items():
            recall, precision = score(res["pairs"], truth)
            rows.append(
                f"| {name} (seed {args.seed}) | {len(ds.ids)} | {len(truth)} | {tool} | "
                f"{len(res['pairs'])} | {recall:.3f} | {precision:.3f} | "
                f"{res['largest']} (planted {biggest}) | {res['seconds']:.1f} |"
            )
            print(rows[-1], flush=True)
            if tool == "labelaudit":
                print(f"  low-information images: {res['low']}", flush=True)
    print()
    print("| set | images | planted pairs | tool | pairs found | recall | precision "
          "| largest group | seconds |")  # fmt: skip
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
