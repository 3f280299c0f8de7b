"""`triage report`: the feedback measurement (triage.feedback.report) as an HTML page with plots."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from triage.keywords import KEYWORD_SERVICE, SERVICE_BY_NUMBER

COLOURS = {15: "#2e7d32", 17: "#1565c0", 18: "#c62828"}


def _micro(block: dict) -> tuple[float | None, float | None]:
    """Keyword precision and recall pooled over every keyword."""
    kws = block["per_keyword"].values()
    det, cor, mis = (sum(v[k] for v in kws) for k in ("detections", "correct", "missed"))
    return (cor / det if det else None), (cor / (cor + mis) if cor + mis else None)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _num(v) -> str:
    return "–" if v is None else f"{v:g}"


def write_html(rep: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("")
    overall = rep["overall"]
    figures = []

    fig, ax = plt.subplots(figsize=(11, 3.6))
    kws = list(KEYWORD_SERVICE)
    x = np.arange(len(kws))
    for offset, key, hatch in ((-0.2, "precision", ""), (0.2, "recall", "//")):
        vals = [overall["per_keyword"][k][key] for k in kws]
        ax.bar(x + offset, [v if v is not None else 0 for v in vals], 0.4, label=key, hatch=hatch,
               color=[COLOURS[KEYWORD_SERVICE[k]] for k in kws], edgecolor="white", alpha=0.85)
    ax.set_xticks(x, [f"{k}\n({overall['per_keyword'][k]['correct'] + overall['per_keyword'][k]['missed']})"
                      for k in kws], fontsize=8, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("precision (plain) / recall (hatched)")
    ax.set_title("Per keyword, all reviewed calls (in brackets: keywords said)")
    figures.append(("keywords", fig))

    models = list(rep["models"])
    if models:
        fig, ax = plt.subplots(figsize=(11, 3.2))
        xs = np.arange(len(models))
        series = {"keyword recall": [_micro(rep["models"][m])[1] for m in models],
                  "keyword precision": [_micro(rep["models"][m])[0] for m in models],
                  "route exact match": [rep["models"][m]["route_exact_match"] for m in models]}
        for name, vals in series.items():
            ax.plot(xs, [np.nan if v is None else v for v in vals], marker="o", label=name)
        ax.set_xticks(xs, [f"{m}\n{rep['models'][m]['calls']} calls" for m in models], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title("Trend per model version (in the order they were first reviewed)")
        figures.append(("trend", fig))

    imgs = []
    for name, fig in figures:
        fig.tight_layout()
        file = stem.parent / f"{stem.name}_{name}.png"
        fig.savefig(file, dpi=80)
        plt.close(fig)
        imgs.append(f"<img src='{html.escape(file.name)}' alt='{name} plot'>")

    def service_rows(block):
        return "".join(f"<tr><th>{s} {html.escape(SERVICE_BY_NUMBER[int(s)].name)}</th><td>{_pct(v['precision'])}"
                       f"</td><td>{_pct(v['recall'])}</td><td>{v['routed']}</td><td>{v['true']}</td></tr>"
                       for s, v in block["per_service"].items())

    kw_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_pct(v['precision'])}</td><td>{_pct(v['recall'])}</td>"
                      f"<td>{v['correct']}</td><td>{v['wrong']}</td><td>{v['missed']}</td></tr>"
                      for k, v in overall["per_keyword"].items())
    model_rows = "".join(
        f"<tr><th><code>{html.escape(m)}</code></th><td>{b['calls']}</td><td>{b['hours']}</td>"
        f"<td>{_pct(_micro(b)[0])}</td><td>{_pct(_micro(b)[1])}</td><td>{_pct(b['route_exact_match'])}</td>"
        f"<td>{_num(b['false_alarms_per_hour'])}</td><td>{_num(b['time_to_first_correct_route_s']['median'])}</td>"
        f"</tr>" for m, b in rep["models"].items())
    t = overall["time_to_first_correct_route_s"]
    page = f"""<!doctype html><meta charset="utf-8"><title>triage: accuracy on this centre's calls</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:1em 0}}
th,td{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}td{{font-variant-numeric:tabular-nums}}
.note{{background:#fff3e0;padding:.6em 1em;border-radius:6px}}</style>
<h1>triage: accuracy on this centre's reviewed calls</h1>
<p class="note">Measured from dispatchers' feedback: a call counts once a dispatcher confirmed, re-routed, or marked
a detection wrong or a keyword missed. Keywords nobody marked missed are not counted as missed, so recall is an
upper bound; routes are suggestions and the dispatcher decides.</p>
<table><tr><th>reviewed calls</th><td>{overall['calls']}</td></tr>
<tr><th>hours of reviewed audio</th><td>{overall['hours']}</td></tr>
<tr><th>route exact match</th><td>{_pct(overall['route_exact_match'])}</td></tr>
<tr><th>false alarms (detections marked wrong)</th><td>{overall['false_alarms']}
 ({_num(overall['false_alarms_per_hour'])} per hour)</td></tr>
<tr><th>time to the first correct route (call time)</th><td>median {_num(t['median'])} s, p95 {_num(t['p95'])} s
 over {t['calls']} calls</td></tr>
<tr><th>reviewers</th><td>{html.escape(', '.join(rep['reviewers']))}</td></tr></table>
{imgs[0] if imgs else ''}
<h2>Per service</h2><table><tr><th></th><th>precision</th><th>recall</th><th>routed</th><th>true</th></tr>
{service_rows(overall)}</table>
<h2>Per keyword</h2><table><tr><th></th><th>precision</th><th>recall</th><th>correct</th><th>wrong</th>
<th>missed</th></tr>{kw_rows}</table>
<h2>Per model version</h2>{imgs[1] if len(imgs) > 1 else ''}
<table><tr><th>model</th><th>calls</th><th>hours</th><th>keyword precision</th><th>keyword recall</th>
<th>route exact</th><th>false alarms / h</th><th>first correct route, median (s)</th></tr>{model_rows}</table>
"""
    path.write_text(page, encoding="utf-8")
    return path
