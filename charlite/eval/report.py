"""The evaluation report: ``report.md`` (tables), PNG charts, ``summary.json``.

``scores.jsonl`` (every judgement) and ``checks.jsonl`` (every deterministic check) sit in the
same folder. Charts are drawn with matplotlib's Agg canvas, imported only when a report is
written, so nothing here needs a display.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from charlite.errors import CharliteError
from charlite.eval.stats import Stat
from charlite.files import atomic_path, write_json_atomic, write_text_atomic

CHECK_TITLES = {
    "character_break": "character breaks (lower is better)",
    "topic4_leakage": "topic-4 leakage (lower is better)",
    "empty": "empty replies (lower is better)",
    "runaway": "runaway replies (lower is better)",
    "fact_recall": "fact recall (higher is better)",
}
TOPIC_TITLES = {
    "topic-1": "topic-1 personal information and past experiences",
    "topic-2": "topic-2 interpersonal relationships",
    "topic-3": "topic-3 values and preferences",
    "topic-4": "topic-4 questions hard to answer without breaking character",
}


def _stat(data: dict[str, Any] | None) -> Stat | None:
    return Stat(**data) if data else None


def _cell(data: dict[str, Any] | None, percent: bool = False) -> str:
    stat = _stat(data)
    return stat.fmt(percent=percent) if stat else "–"


def _table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(esc(h) for h in header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _files_section(summary: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Files",
        "",
        _table(
            ["file", "character", "model", "mode", "format", "replies", "judged"],
            [
                [
                    f["label"],
                    f["character"],
                    str(f["model"]),
                    f["mode"],
                    f["source_format"],
                    str(f["items"]),
                    str(f["judged_items"]),
                ]
                for f in summary["files"]
            ],
        ),
    ]


def _scores_sections(summary: dict[str, Any], labels: list[str]) -> list[str]:
    """The judge's scores by dimension, then by topic where any topic was scored."""
    out = ["", "## Scores by dimension", ""]
    rows = [
        [dim] + [_cell(summary["scores"][lb].get(dim)) for lb in labels]
        for dim in summary["dimensions"]
    ]
    out.append(_table(["dimension"] + labels, rows))
    topics = sorted({t for lb in labels for t in summary["topics"].get(lb, {})})
    if topics:
        out += ["", "## Scores by topic", ""]
        rows = []
        for topic in topics:
            for dim in summary["dimensions"]:
                cells = [
                    _cell(summary["topics"].get(lb, {}).get(topic, {}).get(dim)) for lb in labels
                ]
                if any(c != "–" for c in cells):
                    rows.append([TOPIC_TITLES.get(topic, topic), dim] + cells)
        out.append(_table(["topic", "dimension"] + labels, rows))
    return out


def render_markdown(summary: dict[str, Any], charts: list[str] = ()) -> str:
    labels = [f["label"] for f in summary["files"]]
    out = ["# charlite evaluation", ""]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    judge = f"`{summary['judge']}`" if summary.get("judge") else "none (checks only)"
    out.append(f"Judge: {judge} · {len(labels)} result file(s) · {when}")
    if summary.get("limit"):
        out.append(f"Judged only the first {summary['limit']} replies of each file.")
    out.append("")
    out.append(
        "Scores are means on a 1–7 scale with a 95% bootstrap interval and the number of "
        "judgements; unscored judgements (the judge never gave a valid score) are counted "
        "apart and never averaged. Check rates are shares of replies."
    )
    out += _files_section(summary)
    if summary.get("judge"):
        out += _scores_sections(summary, labels)
    out += ["", "## Deterministic checks", ""]
    rows = [
        [CHECK_TITLES.get(name, name)]
        + [_cell(summary["checks"][lb].get(name), percent=True) for lb in labels]
        for name in summary["checks_order"]
    ]
    out.append(_table(["check"] + labels, rows))
    if charts:
        out += ["", "## Charts", ""]
        out += [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    out.append("")
    return "\n".join(out)


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CharliteError(
            "matplotlib is needed for the report's charts", hint="pip install 'charlite[eval]'"
        ) from None
    fig = Figure(figsize=(9, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def bar_chart(
    path: Path,
    groups: list[str],
    series: dict[str, list[Stat | None]],
    *,
    title: str,
    ylabel: str,
    ymax: float,
    scale: float = 1.0,
) -> Path:
    """One bar group per entry of ``groups``, one bar per series, with interval error bars."""
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for k, (label, stats) in enumerate(series.items()):
        heights, lows, highs = [], [], []
        for s in stats:
            if s is None or s.mean is None:
                heights.append(0.0)
                lows.append(0.0)
                highs.append(0.0)
            else:
                heights.append(s.mean * scale)
                lows.append(max(0.0, (s.mean - s.low) * scale))
                highs.append(max(0.0, (s.high - s.mean) * scale))
        ax.bar(
            x + (k - (n - 1) / 2) * width,
            heights,
            width,
            yerr=[lows, highs],
            capsize=3,
            label=label,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=0 if len(groups) <= 6 else 30)
    ax.set_ylim(0, ymax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    # below the axes, so no bar is hidden behind it
    ax.legend(
        fontsize="small",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        ncol=min(n, 3),
        frameon=False,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def write_report(
    out_dir: Path,
    summary: dict[str, Any],
    checks: list[dict[str, Any]],
) -> list[Path]:
    """Write report.md, the charts, summary.json and checks.jsonl; return the paths."""
    out_dir = Path(out_dir)
    labels = [f["label"] for f in summary["files"]]
    written: list[Path] = []
    charts: list[str] = []
    if summary.get("judge"):
        series = {
            lb: [_stat(summary["scores"][lb].get(d)) for d in summary["dimensions"]]
            for lb in labels
        }
        p = bar_chart(
            out_dir / "scores.png",
            summary["dimensions"],
            series,
            title=f"Judge scores ({summary['judge']})",
            ylabel="score (1-7), 95% interval",
            ymax=7.5,
        )
        charts.append(p.name)
    names = summary["checks_order"]
    series = {lb: [_stat(summary["checks"][lb].get(n)) for n in names] for lb in labels}
    p = bar_chart(
        out_dir / "checks.png",
        [n.replace("_", " ") for n in names],
        series,
        title="Deterministic checks",
        ylabel="% of replies, 95% interval",
        ymax=105,
        scale=100.0,
    )
    charts.append(p.name)
    written += [out_dir / c for c in charts]
    write_text_atomic(out_dir / "report.md", render_markdown(summary, charts))
    write_json_atomic(out_dir / "summary.json", summary)
    import json

    write_text_atomic(
        out_dir / "checks.jsonl", "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in checks)
    )
    written += [out_dir / "report.md", out_dir / "summary.json", out_dir / "checks.jsonl"]
    return written
