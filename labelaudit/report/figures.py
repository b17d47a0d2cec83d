"""Plotly figures of the report.

Every string that reaches a figure (class names, ids, detector names) goes through
:func:`esc`: plotly.js renders a subset of HTML in labels and hover text and drops
unknown tags, so ``<img ...>`` in a class name would vanish. Escaped, plotly shows it
literally (it decodes ``&lt;`` back to ``<`` in a text node).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labelaudit.report.analysis import IntensityData

#: The page's system font stack: nothing is fetched.
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a", "#8ca252", "#bd9e39",
    "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
]  # fmt: skip
#: A horizontal legend above the plot, right-aligned (clear of the left-aligned title).
TOP_RIGHT_LEGEND = {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}
#: History columns that are not learning curves, and words that mark the ones that are.
CURVE_SKIP = ("epoch", "fold", "step", "seconds", "lr", "rate", "images_per_s", "frozen_backbone")
CURVE_KEEP = ("loss", "f1", "acc", "auc", "ap", "precision", "recall")
#: Above this many points the embedding map uses WebGL (``scattergl``).
WEBGL_POINTS = 5000


def page_template() -> dict[str, Any]:
    """The plotly template the page applies to every figure (stored once in the page)."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def esc(value: Any) -> str:
    """Escape a string for plotly text (labels, ticks, hover): shown literally."""
    return html.escape(str(value), quote=False)


def _esc_all(values: Sequence[Any]) -> list[str]:
    return [esc(v) for v in values]


def _layout(fig: go.Figure, height: int, **kwargs: Any) -> go.Figure:
    fig.update_layout(
        template="none",  # the page applies plotly_white once to every figure
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        font={"family": FONT, "size": 12},
        hoverlabel={"font": {"family": FONT}},
        **kwargs,
    )
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def _class_height(k: int) -> int:
    return max(260, 22 * k + 80)


# ------------------------------------------------------------------------ classes


def class_counts(table: pd.DataFrame) -> go.Figure:
    """Horizontal bars: images per class."""
    names = _esc_all(table["name"])
    fig = go.Figure(
        go.Bar(
            x=table["images"].to_numpy(),
            y=names,
            orientation="h",
            marker_color=PALETTE[0],
            hovertemplate="%{y}: %{x} images<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, _class_height(len(names)), title="Images per class", xaxis_title="images")


def class_weights(table: pd.DataFrame) -> go.Figure:
    """Horizontal bars: the retraining class weights ``w_k = 1 - n_k / N``."""
    names = _esc_all(table["name"])
    fig = go.Figure(
        go.Bar(
            x=table["weight"].to_numpy(),
            y=names,
            orientation="h",
            marker_color=PALETTE[2],
            hovertemplate="%{y}: w = %{x:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(range=[0, 1])
    return _layout(
        fig, _class_height(len(names)), title="Class weights w = 1 - n/N", xaxis_title="weight"
    )


def cooccurrence_heatmap(matrix: np.ndarray, names: Sequence[str]) -> go.Figure:
    """K x K label co-occurrence counts (log-scaled colour, counts on hover)."""
    labels = _esc_all(names)
    fig = go.Figure(
        go.Heatmap(
            z=np.log10(matrix + 1.0),
            x=labels,
            y=labels,
            customdata=matrix,
            colorscale="Blues",
            colorbar={"title": "log10(n+1)"},
            hovertemplate="%{y} &amp; %{x}: %{customdata} images<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-45)
    size = max(360, 24 * len(labels) + 160)
    return _layout(fig, size, title="Label co-occurrence (images with both labels)")


# -------------------------------------------------------------------------- model


def per_class_scores(per_class: pd.DataFrame) -> go.Figure:
    """Grouped horizontal bars: per-class precision, recall and F1 (out of fold)."""
    names = _esc_all(per_class["class"])
    fig = go.Figure()
    for i, metric in enumerate(("precision", "recall", "f1")):
        fig.add_bar(
            x=per_class[metric].to_numpy(),
            y=names,
            orientation="h",
            name=metric,
            marker_color=PALETTE[i],
            hovertemplate="%{y}: " + metric + " %{x:.3f}<extra></extra>",
        )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(range=[0, 1])
    return _layout(
        fig,
        max(320, 40 * len(names) + 80),
        title="Per-class out-of-fold scores",
        barmode="group",
        legend=TOP_RIGHT_LEGEND,
    )


def learning_curves(curves: dict[str, pd.DataFrame]) -> go.Figure:
    """One panel per recorded metric (loss, F1, ...), one line per fold."""
    metrics: list[str] = []
    for frame in curves.values():
        metrics += [c for c in frame.columns if c not in CURVE_SKIP]
    metrics = list(dict.fromkeys(metrics))
    useful = [m for m in metrics if any(w in m for w in CURVE_KEEP)]
    metrics = (useful or metrics)[:4]
    fig = make_subplots(rows=1, cols=max(len(metrics), 1), subplot_titles=_esc_all(metrics))
    for j, (fold, frame) in enumerate(curves.items()):
        for i, metric in enumerate(metrics, start=1):
            if metric not in frame:
                continue
            fig.add_scatter(
                x=frame["epoch"].to_numpy(),
                y=frame[metric].to_numpy(dtype=float),
                mode="lines+markers",
                name=esc(fold),
                legendgroup=esc(fold),
                showlegend=i == 1,
                line={"color": PALETTE[j % len(PALETTE)]},
                row=1,
                col=i,
            )
    fig.update_xaxes(title_text="epoch")
    _layout(fig, 360, title="Learning curves per fold")
    fig.update_layout(margin={"t": 80})
    return fig


# ------------------------------------------------------------------------ embedding


def embedding_map(
    xy: np.ndarray,
    given: np.ndarray,
    names: Sequence[str],
    row_of: np.ndarray,
    scores: dict[str, np.ndarray],
    method: str,
) -> go.Figure:
    """The 2-D embedding map, coloured by class or by a score (buttons switch).

    ``customdata`` of every point is the image's row in the page's issue table, so the
    page can show the thumbnail and id on hover and open the detail view on click
    (plotly's own hover box is off: the page writes the id as text).

    Parameters
    ----------
    xy
        N x 2 coordinates, dataset order.
    given
        N x K given labels.
    names
        Class names.
    row_of
        N ints: the table row of each image (-1 when it has none).
    scores
        Score name -> N floats (e.g. outlier score); one colour mode each.
    method
        Projection name for the axis titles.
    """
    n = xy.shape[0]
    kind = go.Scattergl if n > WEBGL_POINTS else go.Scatter
    size = 5 if n > 2000 else 7
    fig = go.Figure()
    by_class = _class_traces(fig, kind, size, xy, given, names, row_of)
    by_score = _score_traces(fig, kind, size, xy, row_of, scores)
    buttons = [_visibility_button("colour by class", len(fig.data), by_class, legend=True)]
    buttons += [
        _visibility_button(f"colour by {label}", len(fig.data), [t], legend=False)
        for label, t in zip(scores, by_score, strict=True)
    ]
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "buttons": buttons,
                "x": 1,
                "y": 1.02,
                "xanchor": "right",
                "yanchor": "bottom",
                "pad": {"r": 0, "t": 0},
                "showactive": True,
            }
        ],
        hovermode="closest",
        xaxis_title=f"{method} 1",
        yaxis_title=f"{method} 2",
    )
    _layout(fig, 580, title=f"Embeddings ({method})")
    fig.update_layout(margin={"t": 80})
    return fig


def _class_traces(
    fig: go.Figure,
    kind: Any,
    size: int,
    xy: np.ndarray,
    given: np.ndarray,
    names: Sequence[str],
    row_of: np.ndarray,
) -> list[int]:
    """One trace per class (and one for unlabelled images); returns their indices."""
    by_class = []
    for k, name in enumerate(names):
        rows = np.flatnonzero(given[:, k])
        if not len(rows):
            continue
        by_class.append(len(fig.data))
        fig.add_trace(
            kind(
                x=xy[rows, 0],
                y=xy[rows, 1],
                mode="markers",
                name=esc(name),
                customdata=row_of[rows].astype(np.int32),
                marker={"size": size, "color": PALETTE[k % len(PALETTE)], "opacity": 0.75},
                hoverinfo="none",
            )
        )
    unlabelled = np.flatnonzero(~given.any(axis=1))
    if len(unlabelled):
        by_class.append(len(fig.data))
        fig.add_trace(
            kind(
                x=xy[unlabelled, 0],
                y=xy[unlabelled, 1],
                mode="markers",
                name="(no label)",
                customdata=row_of[unlabelled].astype(np.int32),
                marker={"size": size, "color": "#999"},
                hoverinfo="none",
            )
        )
    return by_class


def _score_traces(
    fig: go.Figure,
    kind: Any,
    size: int,
    xy: np.ndarray,
    row_of: np.ndarray,
    scores: dict[str, np.ndarray],
) -> list[int]:
    """One hidden trace per score (colour mode); returns their indices."""
    by_score = []
    for label, values in scores.items():
        by_score.append(len(fig.data))
        fig.add_trace(
            kind(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                name=esc(label),
                customdata=row_of.astype(np.int32),
                visible=False,
                showlegend=False,
                marker={
                    "size": size,
                    "color": np.nan_to_num(values.astype(np.float32)),
                    "colorscale": "Viridis",
                    "colorbar": {"title": esc(label)},
                    "opacity": 0.85,
                },
                hoverinfo="none",
            )
        )
    return by_score


def _visibility_button(label: str, n: int, show: list[int], legend: bool) -> dict[str, Any]:
    visible = [i in show for i in range(n)]
    args = [{"visible": visible}, {"showlegend": legend}]
    return {"label": esc(label), "method": "update", "args": args}


# ---------------------------------------------------------------------- intensity


def intensity_plot(data: IntensityData) -> go.Figure:
    """Per-class box plots of the protein channel's mean, 3-sigma bounds, flagged fields."""
    c = data.classes[data.classes["n"] > 0].reset_index(drop=True)
    names = _esc_all(c["name"])
    fig = go.Figure()
    fig.add_trace(
        go.Box(
            x=names,
            q1=c["q1"].to_numpy(),
            median=c["median"].to_numpy(),
            q3=c["q3"].to_numpy(),
            lowerfence=c["lo"].to_numpy(),
            upperfence=c["hi"].to_numpy(),
            mean=c["mean"].to_numpy(),
            name="distribution",
            marker_color=PALETTE[2],
            boxpoints=False,
        )
    )
    for bound in ("lower", "upper"):
        fig.add_scatter(
            x=names,
            y=c[bound].to_numpy(),
            mode="markers",
            name=f"{bound} bound",
            marker={"symbol": "line-ew-open", "size": 28, "color": "#d62728", "line": {"width": 2}},
            hovertemplate="%{x}: " + bound + " bound %{y:.4f}<extra></extra>",
        )
    f = data.flagged
    if len(f):
        fig.add_scatter(
            x=_esc_all(f["class"]),
            y=f["value"].to_numpy(),
            mode="markers",
            name="flagged field",
            customdata=f["row"].to_numpy(dtype=np.int32),
            text=_esc_all(f["id"]),
            marker={"symbol": "x", "size": 9, "color": "#d62728"},
            hovertemplate="%{text}<br>%{x}: %{y:.4f}<extra>flagged</extra>",
        )
    fig.update_xaxes(type="category", tickangle=-45)
    fig.update_yaxes(title_text=esc(f"{data.column} (fraction of full scale)"), rangemode="tozero")
    return _layout(fig, 480, title="Protein-channel mean intensity per class", boxmode="overlay")


# ---------------------------------------------------------------------- agreement


def upset(combos: list[tuple[tuple[str, ...], int]], methods: Sequence[str]) -> go.Figure:
    """UpSet-style chart: bars of images flagged by exactly each combination, dot matrix below."""
    combos = [c for c in combos if c[1] > 0] or combos[:1]
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.03
    )
    xs = list(range(len(combos)))
    labels = [esc(" + ".join(c[0])) for c in combos]
    fig.add_bar(
        x=xs,
        y=[c[1] for c in combos],
        text=[c[1] for c in combos],
        textposition="outside",
        customdata=labels,
        marker_color=PALETTE[0],
        hovertemplate="%{customdata}: %{y} images<extra></extra>",
        showlegend=False,
        row=1,
        col=1,
    )
    ms = list(methods)
    for x, (combo, _) in enumerate(combos):
        on = [m in combo for m in ms]
        fig.add_scatter(
            x=[x] * len(ms),
            y=_esc_all(ms),
            mode="markers",
            marker={"size": 13, "color": ["#222" if o else "#ddd" for o in on]},
            hoverinfo="skip",
            showlegend=False,
            row=2,
            col=1,
        )
        ys = [esc(m) for m, o in zip(ms, on, strict=True) if o]
        if len(ys) > 1:
            fig.add_scatter(
                x=[x] * len(ys),
                y=ys,
                mode="lines",
                line={"color": "#222", "width": 3},
                hoverinfo="skip",
                showlegend=False,
                row=2,
                col=1,
            )
    fig.update_xaxes(showticklabels=False, range=[-0.6, len(combos) - 0.4])
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=_esc_all(ms), row=2)
    fig.update_yaxes(title_text="images", row=1)
    return _layout(fig, 420, title="Images flagged by exactly each combination of detectors")


def method_heatmap(matrix: np.ndarray, names: Sequence[str], title: str, zmin: float) -> go.Figure:
    """A labelled square heatmap (Jaccard indices, rank correlations) with values printed."""
    labels = _esc_all(names)
    text = [["" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in matrix]
    fig = go.Figure(
        go.Heatmap(
            # None (a gap) where not finite; numpy's stubs leave None out of array_like
            z=np.where(np.isfinite(matrix), matrix, None),  # type: ignore[call-overload]
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            zmin=zmin,
            zmax=1,
            colorscale="RdBu" if zmin < 0 else "Blues",
            reversescale=zmin < 0,
            hovertemplate="%{y} / %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _layout(fig, max(300, 60 * len(labels) + 140), title=esc(title))


def grouped_bars(
    table: pd.DataFrame, title: str, value_range: tuple[float, float] | None
) -> go.Figure:
    """Grouped bars: one group per row of ``table`` (index), one bar per column."""
    fig = go.Figure()
    rows = _esc_all(table.index)
    for i, col in enumerate(table.columns):
        fig.add_bar(
            x=rows,
            y=pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float),
            name=esc(col),
            marker_color=PALETTE[i % len(PALETTE)],
            hovertemplate="%{x}: " + esc(col) + " %{y:.3f}<extra></extra>",
        )
    fig.update_xaxes(type="category")
    if value_range:
        fig.update_yaxes(range=list(value_range))
    return _layout(
        fig,
        360,
        title=esc(title),
        barmode="group",
        legend=TOP_RIGHT_LEGEND,
    )


def score_heatmap(table: pd.DataFrame, title: str) -> go.Figure:
    """A rows x columns heatmap of scores in [0, 1] with the values printed."""
    z = table.to_numpy(dtype=float)
    text = [["" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isfinite(z), z, None),
            x=_esc_all(table.columns),
            y=_esc_all(table.index),
            text=text,
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            hovertemplate="%{y} / %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _layout(fig, max(260, 40 * len(table.index) + 140), title=esc(title))
