"""Two runs' ``bench.json`` side by side: every detector and group, before -> after.

``labelaudit bench RUN --truth D/truth.csv`` writes ``RUN/bench.json``; this prints a
Markdown table of AUROC, AP, recall and precision at the detector's flags for every
(detector, group) row of either run, as ``before -> after`` (one number where they
agree), then the suggestion and exclusive-class summaries. Used for
docs/benchmarks.md ("Negative and exclusive classes", issue 23)::

    python benchmarks/bench_diff.py NAME BEFORE_RUN/bench.json AFTER_RUN/bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = (("auroc", "AUROC"), ("ap", "AP"), ("recall_at_flag", "R@flag"))
METRICS += (("precision_at_flag", "P@flag"),)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pair(before, after) -> str:
    a, b = _fmt(before), _fmt(after)
    return a if a == b else f"{a} -> **{b}**"


def table(name: str, before: dict, after: dict) -> str:
    """The Markdown table of one dataset's two bench results."""
    lines = [
        f"**{name}**",
        "",
        "| detector | group | n_pos | " + " | ".join(label for _, label in METRICS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " |",
    ]
    for det in dict.fromkeys([*before["metrics"], *after["metrics"]]):
        groups = {**before["metrics"].get(det, {}), **after["metrics"].get(det, {})}
        for group in groups:
            b = before["metrics"].get(det, {}).get(group, {})
            a = after["metrics"].get(det, {}).get(group, {})
            n = a.get("n_pos", b.get("n_pos", 0))
            if not n:
                continue
            cells = [_pair(b.get(key), a.get(key)) for key, _ in METRICS]
            lines.append(f"| {det} | {group} | {n} | " + " | ".join(cells) + " |")
    for which, res in (("before", before), ("after", after)):
        g = res.get("suggestions")
        if g:
            lines.append("")
            lines.append(
                f"{which}: suggested changes {g['n_changes']}, right {g['n_right']} "
                f"(precision {_fmt(g['precision'])}); images {g['n_images']}, every change "
                f"right {g['n_images_all_right']}; label errors {g['errors_given']} -> "
                f"{g['errors_accepted']} after accepting all"
            )
        e = res.get("exclusive")
        if e:
            lines.append(
                f"{which}: swaps to or from {', '.join(e['classes'])} {e['n_swaps']}, correct "
                f"suggestion {e['swaps_right']}; true {', '.join(e['classes'])} fields "
                f"{e['true_fields']}, flagged as an image problem for their empty stain "
                f"{e['true_fields_image_flagged_empty_stain']} (by an image detector at all "
                f"{e['true_fields_image_flagged']})"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before = json.loads(args.before.read_text())
    after = json.loads(args.after.read_text())
    print(table(args.name, before, after))


if __name__ == "__main__":
    main()
