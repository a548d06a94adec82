"""Self-contained HTML reports: metrics tables, figures inlined as base64 PNG, a calibration slot.

A report is one ``.html`` file with no external resource (no script, stylesheet or image links), so
it can be mailed, archived or opened offline. Metrics follow the schema of
``docs/metrics_schema.md``: ``{method: {pattern: {"psnr", "ssim", "nmse", "cpsnr",
"time_per_sample_s", "nfe", "n_slices", "n_samples"}}}``.

The calibration slot shows, for every sampler that drew ``P > 1`` samples, the gain in MSE of the
posterior mean of ``p`` samples over one sample, ``10 log10(E_1 / E_p)``, against the value
``10 log10(2p / (p + 1))`` that a correct sampler attains (Wen et al., sec. 4.1, eq. 19).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .io import atomic_path, png_bytes, to_numpy

__all__ = [
    "ReportFigure",
    "ReportSection",
    "METRIC_COLUMNS",
    "metrics_table_html",
    "render_report",
    "write_report",
    "calibration_gain",
    "plot_calibration",
]

# (key in metrics.json, column header, format, higher is better?)
METRIC_COLUMNS = (
    ("psnr", "PSNR [dB]", "{:.2f}", True),
    ("ssim", "SSIM", "{:.4f}", True),
    ("nmse", "NMSE", "{:.4g}", False),
    ("cpsnr", "cPSNR [dB]", "{:.2f}", True),
    ("time_per_sample_s", "time / sample [s]", "{:.3g}", None),
    ("nfe", "NFE", "{:d}", None),
    ("n_samples", "samples", "{:d}", None),
    ("n_slices", "slices", "{:d}", None),
)


@dataclass
class ReportFigure:
    """A PNG file to inline, with a caption."""

    path: str | Path
    caption: str = ""


@dataclass
class ReportSection:
    """A titled block of text and figures; ``level`` 2 or 3 picks the heading size."""

    title: str
    figures: Sequence[ReportFigure] = field(default_factory=list)
    text: str = ""
    level: int = 2


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table.metrics{border-collapse:collapse;margin:.6em 0 1.2em 0;font-size:.92em}
table.metrics th,table.metrics td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
table.metrics th{background:#f2f2f2}table.metrics td.name{text-align:left;font-family:monospace}
td.best{font-weight:bold;background:#eef7ee}
figure{display:inline-block;margin:.4em;vertical-align:top;text-align:center}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:.9em}
dl.meta dt{font-weight:bold}dl.meta dd{margin:0;font-family:monospace}
p.note{color:#555;font-size:.9em}
"""


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float) and not math.isfinite(value):
        return html.escape(str(value))
    try:
        if fmt.endswith("d}"):
            return fmt.format(int(value))
        return fmt.format(float(value))
    except (TypeError, ValueError):
        return html.escape(str(value))


def metrics_table_html(metrics: Mapping[str, Mapping[str, Mapping]], columns=METRIC_COLUMNS) -> str:
    """One HTML table per pattern: a row per method, a column per metric; the best value of each
    quality metric is marked (class ``best``)."""
    patterns: list[str] = []
    for per_pattern in metrics.values():
        for p in per_pattern:
            if p not in patterns:
                patterns.append(p)
    parts = []
    for pattern in patterns:
        rows = [(m, metrics[m][pattern]) for m in metrics if pattern in metrics[m]]
        best = {}
        for key, _, _, higher in columns:
            vals = [r[key] for _, r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if higher is not None and vals:
                best[key] = max(vals) if higher else min(vals)
        head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _, _ in columns)
        body = []
        for method, r in rows:
            cells = []
            for key, _, fmt, _ in columns:
                v = r.get(key)
                cls = ' class="best"' if key in best and v == best[key] and len(rows) > 1 else ""
                cells.append(f"<td{cls}>{_fmt(v, fmt)}</td>")
            body.append(f'<tr><td class="name">{html.escape(method)}</td>{"".join(cells)}</tr>')
        parts.append(
            f'<h3>{html.escape(pattern)}</h3>\n<table class="metrics" data-pattern="{html.escape(pattern)}">'
            f"<thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )
    return "\n".join(parts)


CALIBRATION_COLUMNS = (
    ("n_samples", "P", "{:d}"),
    ("p_gain_db", "P-gain [dB]", "{:.2f}"),
    ("p_gain_reference_db", "exact sampler [dB]", "{:.2f}"),
    ("std_ratio", "std ratio", "{:.2f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("coverage_nominal", "nominal", "{:.3f}"),
    ("std_error_correlation", "corr(std, |error|)", "{:.2f}"),
)


def calibration_table_html(metrics: Mapping[str, Mapping[str, Mapping]]) -> str:
    """A table of the ``calibration`` entries of metrics rows (``docs/metrics_schema.md``), one row per
    method and pattern; empty string when no row has one."""
    body = []
    for method, per_pattern in metrics.items():
        for pattern, row in per_pattern.items():
            cal = row.get("calibration") if isinstance(row, Mapping) else None
            if not cal:
                continue
            cells = "".join(f"<td>{_fmt(cal.get(k), fmt)}</td>" for k, _, fmt in CALIBRATION_COLUMNS)
            body.append(f'<tr><td class="name">{html.escape(method)}</td><td>{html.escape(pattern)}</td>{cells}</tr>')
    if not body:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in CALIBRATION_COLUMNS)
    return (f'<table class="metrics calibration"><thead><tr><th>method</th><th>pattern</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


CALIBRATION_HOWTO = (
    "How to read it. P-gain: how much closer to the truth the mean of all P samples is than one sample, "
    "10 log10(E_1/E_P); for exact posterior samples it is 10 log10(2P/(P+1)) (column 'exact sampler'). Near "
    "0 dB the samples have collapsed onto one image (the std map is too small); far above, they scatter more "
    "than their error. Std ratio: RMS error of the mean over the spread an exact sampler would have given; "
    "1 is calibrated, above 1 the std map is over-confident (errors larger than the std says), below 1 "
    "under-confident. Coverage: the fraction of pixels whose truth lies in the widest central interval the P "
    "samples form (nominal (P-1)/(P+1)); 90 % intervals need P >= 19. Corr(std, |error|): where the std map "
    "is high the error should be high. All on magnitudes, slices as replicates; with a prior that does not "
    "match the anatomy these mix sampler error and prior mismatch (docs/uncertainty.md)."
)


def _figure_html(fig: ReportFigure) -> str:
    data = base64.b64encode(png_bytes(fig.path)).decode("ascii")
    cap = html.escape(fig.caption or Path(fig.path).stem)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{cap}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def _section_html(sec: ReportSection) -> str:
    lvl = 3 if sec.level >= 3 else 2
    out = [f"<h{lvl}>{html.escape(sec.title)}</h{lvl}>"]
    if sec.text:
        out.append(f'<p class="note">{html.escape(sec.text)}</p>')
    out.extend(_figure_html(f) for f in sec.figures)
    return "\n".join(out)


def render_report(
    title: str,
    *,
    metrics: Mapping | None = None,
    sections: Sequence[ReportSection] = (),
    calibration: Sequence[ReportFigure] | None = None,
    meta: Mapping[str, object] | None = None,
    intro: str = "",
) -> str:
    """Build the HTML text of a report.

    Parameters
    ----------
    title : heading and ``<title>``.
    metrics : ``{method: {pattern: {metric: value}}}`` (``docs/metrics_schema.md``), shown as tables.
    sections : figure sections, in order (typically one per pattern, then per method).
    calibration : figures for the calibration slot; ``None`` or empty prints why it is empty.
    meta : key/value facts about the run (version, command, seed, ...).
    intro : a paragraph under the title.
    """
    meta = dict(meta or {})
    meta.setdefault("generated", _dt.datetime.now().isoformat(timespec="seconds"))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if intro:
        out.append(f"<p>{html.escape(intro)}</p>")
    out.append('<dl class="meta">')
    out.extend(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in meta.items())
    out.append("</dl>")
    if metrics:
        out.append('<h2 id="metrics">Metrics</h2>')
        out.append(
            '<p class="note">Magnitude PSNR/SSIM/NMSE (fastMRI conventions) and complex PSNR of the '
            "posterior mean against the ground truth, averaged over slices; best value per column in bold."
            "</p>"
        )
        out.append(metrics_table_html(metrics))
    out.append('<h2 id="calibration">Calibration</h2>')
    cal_table = calibration_table_html(metrics) if metrics else ""
    if cal_table:
        out.append(cal_table)
        out.append(f'<p class="note">{html.escape(CALIBRATION_HOWTO)}</p>')
    if calibration:
        out.append(
            '<p class="note">Gain of the mean of p samples over one sample, 10 log10(E_1/E_p), against '
            "10 log10(2p/(p+1)) for a correct sampler (Wen et al. sec. 4.1).</p>"
        )
        out.extend(_figure_html(f) for f in calibration)
    elif not cal_table:
        out.append('<p class="note">No method drew more than one sample: nothing to calibrate.</p>')
    out.extend(_section_html(s) for s in sections)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(path, title: str, **kwargs) -> Path:
    """Render (:func:`render_report`) and write the report atomically to ``path``."""
    text = render_report(title, **kwargs)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# --------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------
def calibration_gain(samples, truth, sizes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Measured gain ``10 log10(E_1 / E_p)`` of the mean of ``p`` samples over one sample.

    Parameters
    ----------
    samples : ``(P, ...)`` complex or real samples of one posterior.
    truth : ``(...)`` ground truth, broadcasting against one sample.
    sizes : group sizes ``p`` (default: powers of two up to ``P``). For each ``p`` the ``P`` samples
        are split into ``P // p`` disjoint groups; ``E_p`` is the mean squared error of the group
        means (complex difference), averaged over groups.

    Returns
    -------
    p : int array; gain_db : float array. For exact posterior samples and a mean-square error
    dominated by posterior spread, the gain approaches ``10 log10(2p / (p + 1))`` (Wen eq. 19).
    """
    s = to_numpy(samples).astype(np.complex128)
    t = to_numpy(truth).astype(np.complex128)
    P = s.shape[0]
    if P < 2:
        raise ValueError(f"calibration needs at least 2 samples, got {P}")
    if sizes is None:
        sizes = [2**k for k in range(int(math.log2(P)) + 1)]
    sizes = [int(p) for p in sizes if 1 <= int(p) <= P]
    err = {}
    for p in sizes:
        g = P // p
        means = s[: g * p].reshape(g, p, *s.shape[1:]).mean(axis=1)
        err[p] = float(np.mean(np.abs(means - t) ** 2))
    e1 = err.get(1) or float(np.mean(np.abs(s - t) ** 2))
    p_arr = np.array(sizes)
    return p_arr, np.array([10 * math.log10(e1 / max(err[p], 1e-300)) for p in sizes])


def plot_calibration(path, curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str = "") -> Path:
    """Plot measured calibration gains ``{label: (p, gain_db)}`` with the reference
    ``10 log10(2p/(p+1))`` into a PNG."""
    from .io import _figure, _save_fig

    fig = _figure(1, 1, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    pmax = 2
    for label, (p, gain) in curves.items():
        ax.plot(p, gain, "o-", label=label)
        pmax = max(pmax, int(np.max(p)))
    pr = np.arange(1, pmax + 1)
    ax.plot(pr, 10 * np.log10(2 * pr / (pr + 1)), "k--", label="reference 2p/(p+1)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples averaged p")
    ax.set_ylabel("gain over one sample [dB]")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save_fig(fig, path)
