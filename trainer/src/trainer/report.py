"""The evaluation report: one HTML page with PNG plots, for the people who decide to trust a model.

Saved under `<reports root>/<model>/v<version>/` (index.html + *.png) and referenced from the
registry row. Candidate, baseline and (when there is one) the champion re-scored on the same
holdout are drawn together, so every plot answers "is the new model better, and where".
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.evaluate import curves

COLOURS = {"candidate": "#1f6fb4", "baseline": "#9a9a9a", "champion": "#e07b00"}
METRIC_ROWS = (
    ("roc_auc", "ROC AUC", "higher is better; the gate's metric"),
    ("pr_auc", "PR AUC (average precision)", "higher is better"),
    ("brier", "Brier score", "lower is better"),
    ("log_loss", "Log loss", "lower is better"),
    ("top_decile_lift", "Lift in top decile", "higher is better"),
)


@dataclass
class ReportInput:
    model_name: str
    version: int
    ds: str
    labels: np.ndarray  # holdout labels
    scores: dict[str, np.ndarray]  # model label -> holdout churn probabilities
    metrics: dict[str, dict[str, Any]]  # model label -> metrics
    importance: dict[str, dict[str, float]]
    decision: str
    promote: bool
    summary: dict[str, Any]  # data window, row counts, class balance, features, code version...


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Lay out, write the PNG, and free the figure (matplotlib keeps open figures alive)."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"figure.dpi": 110, "font.size": 11, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}
    )
    return plt


def _label(name: str, data: ReportInput, metric: str) -> str:
    return f"{name} ({metric.split('_')[0].upper()} AUC {data.metrics[name][metric]:.3f})"


def _roc(plt: Any, data: ReportInput, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for name, scores in data.scores.items():
        c = curves(data.labels, scores)
        ax.plot(c["fpr"], c["tpr"], color=COLOURS[name], lw=2.2 if name == "candidate" else 1.6, label=_label(name, data, "roc_auc"))
    ax.plot([0, 1], [0, 1], ls="--", color="#444", lw=1, label="random (AUC 0.500)")
    ax.set(
        xlabel="False positive rate (share of non-churners flagged)",
        ylabel="True positive rate (share of churners caught)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.set_title("ROC curve on the temporal holdout")
    ax.legend(loc="lower right")
    _save(plt, fig, out / "roc.png")


def _pr(plt: Any, data: ReportInput, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for name, scores in data.scores.items():
        c = curves(data.labels, scores)
        ax.plot(
            c["recall"], c["precision"], color=COLOURS[name], lw=2.2 if name == "candidate" else 1.6, label=_label(name, data, "pr_auc")
        )
    base = float(np.mean(data.labels))
    ax.axhline(base, ls="--", color="#444", lw=1, label=f"churn rate {base:.1%} (random)")
    ax.set(xlabel="Recall (share of churners caught)", ylabel="Precision (share of flagged who churn)", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title("Precision-recall curve on the temporal holdout")
    ax.legend(loc="upper right")
    _save(plt, fig, out / "precision_recall.png")


def _calibration(plt: Any, data: ReportInput, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.plot([0, 1], [0, 1], ls="--", color="#444", lw=1, label="perfectly calibrated")
    for name in data.scores:
        bins = [b for b in data.metrics[name]["calibration"] if b["rows"] > 0]
        x = [b["mean_predicted"] for b in bins]
        y = [b["observed_rate"] for b in bins]
        ax.plot(
            x,
            y,
            marker="o",
            color=COLOURS[name],
            lw=2 if name == "candidate" else 1.4,
            label=f"{name} (Brier {data.metrics[name]['brier']:.3f})",
        )
    ax.set(xlabel="Mean predicted churn probability (per 0.1-wide bin)", ylabel="Observed churn rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("Calibration: do predicted probabilities come true?")
    ax.legend(loc="upper left")
    _save(plt, fig, out / "calibration.png")


def _distribution(plt: Any, data: ReportInput, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    scores = data.scores["candidate"]
    bins = np.linspace(0, 1, 41)
    ax.hist(
        scores[data.labels == 0],
        bins=bins,
        density=True,
        alpha=0.55,
        color="#2a9d5c",
        label=f"stayed (n={int(np.sum(data.labels == 0)):,})",
    )
    ax.hist(
        scores[data.labels == 1],
        bins=bins,
        density=True,
        alpha=0.55,
        color="#c0392b",
        label=f"churned (n={int(np.sum(data.labels == 1)):,})",
    )
    ax.set(xlabel="Candidate's churn probability", ylabel="Density", xlim=(0, 1))
    ax.set_title("Score distribution by actual outcome (holdout)")
    ax.legend()
    _save(plt, fig, out / "score_distribution.png")


def _importance(plt: Any, data: ReportInput, out: Path) -> None:
    items = sorted(data.importance.items(), key=lambda kv: kv[1]["mean"])
    fig, ax = plt.subplots(figsize=(7.2, max(3.0, 0.38 * len(items) + 1.2)))
    names = [k for k, _ in items]
    means = [v["mean"] for _, v in items]
    stds = [v["std"] for _, v in items]
    ax.barh(names, means, xerr=stds, color=COLOURS["candidate"], alpha=0.85, capsize=3)
    ax.axvline(0, color="#444", lw=1)
    ax.set(xlabel="Drop in holdout ROC AUC when the feature is shuffled")
    ax.set_title("Permutation feature importance (candidate)")
    ax.grid(axis="y", visible=False)
    _save(plt, fig, out / "permutation_importance.png")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if np.isnan(value) else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _metrics_table(data: ReportInput) -> str:
    names = list(data.metrics)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for key, title, hint in METRIC_ROWS:
        cells = "".join(f"<td class='num'>{_fmt(data.metrics[n].get(key))}</td>" for n in names)
        rows.append(f"<tr><th scope='row'>{title}<div class='hint'>{hint}</div></th>{cells}</tr>")
    return f"<table><thead><tr><th>metric (holdout)</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _calibration_table(data: ReportInput) -> str:
    bins = data.metrics["candidate"]["calibration"]
    rows = "".join(
        f"<tr><td>{b['lower']:.1f}–{b['upper']:.1f}</td><td class='num'>{b['rows']:,}</td><td class='num'>{_fmt(b['mean_predicted'])}</td>"
        f"<td class='num'>{_fmt(b['observed_rate'])}</td></tr>"
        for b in bins
    )
    head = "<tr><th>probability bin</th><th>rows</th><th>mean predicted</th><th>observed churn rate</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"


def _summary_table(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th scope='row'>{html.escape(k)}</th><td>{_fmt(v) if not isinstance(v, dict | list) else _nested(v)}</td></tr>"
        for k, v in summary.items()
    )
    return f"<table>{rows}</table>"


def _nested(value: dict[str, Any] | list[Any]) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(str(k))}: {_fmt(v)}" for k, v in value.items())
    return ", ".join(_fmt(v) if not isinstance(v, dict) else html.escape(" ".join(str(x) for x in v.values())) for v in value)


CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
color: #222; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
.verdict { padding: .8rem 1rem; border-radius: 6px; margin: 1rem 0; font-size: 1.05rem; }
.yes { background: #e6f4ea; border: 1px solid #8cc79b; } .no { background: #fdecea; border: 1px solid #e39a92; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } th, td { border: 1px solid #ddd; padding: .35rem .7rem;
text-align: left; vertical-align: top; }
thead th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.hint { font-weight: normal; color: #777; font-size: .8rem; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; } .plots img
{ width: 100%; border: 1px solid #eee; }
.muted { color: #666; }
"""


def write(data: ReportInput, root: Path) -> Path:
    """Write the plots and index.html; return the HTML path."""
    out = root / data.model_name / f"v{data.version}"
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    for draw in (_roc, _pr, _calibration, _distribution, _importance):
        draw(plt, data, out)
    verdict = "promoted to champion" if data.promote else "not promoted"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(data.model_name)} v{data.version}: evaluation
report</title><style>{CSS}</style></head>
<body>
<h1>Churn model <code>{html.escape(data.model_name)}</code> version {data.version}</h1>
<p class="muted">Trained for logical date {html.escape(data.ds)}; evaluated on the temporal holdout (latest
labelled cutoff, never seen in training).</p>
<div class="verdict {"yes" if data.promote else "no"}"><strong>Gate: {verdict}.</strong> {html.escape(data.decision)}</div>
<h2>Metrics</h2>
<p class="muted">All models scored on the same holdout rows. The baseline is a logistic regression on recency
alone; the champion (if any) is the current production model re-scored now from its registered artifact.</p>
{_metrics_table(data)}
<h2>Plots</h2>
<div class="plots">
<figure><img src="roc.png" alt="ROC curve"></figure>
<figure><img src="precision_recall.png" alt="Precision-recall curve"></figure>
<figure><img src="calibration.png" alt="Calibration curve"></figure>
<figure><img src="score_distribution.png" alt="Score distribution by class"></figure>
<figure><img src="permutation_importance.png" alt="Permutation feature importance"></figure>
</div>
<h2>Calibration of the candidate</h2>
{_calibration_table(data)}
<h2>Data and provenance</h2>
{_summary_table(data.summary)}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
