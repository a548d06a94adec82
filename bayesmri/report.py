"""Self-contained HTML reports: metrics tables, figures inlined as base64 PNG, a calibration slot.

A report is one ``.html`` file with no external resource (no script, stylesheet or image links), so
it can be mailed, archived or opened offline. Metrics follow the schema of
``docs/metrics_schema.md``: ``{method: {pattern: {"psnr", "ssim", "nmse", "cpsnr",
"time_per_sample_s", "nfe", "n_slices", "n_samples"}}}``.

The calibration slot shows, for every sampler that drew ``P > 1`` samples, the gain in MSE of the
posterior mean of ``p`` samples over one sample, ``10 log10(E_1 / E_p)``, against the value
``10 log10(2p / (p + 1))`` that a correct sampler attains (Wen et al., sec. 4.1, eq. 19), with a reading
guide and the automatic flags of :func:`bayesmri.calibration.calibration_flags`.

No script: a section with ``slices`` shows one panel per slice behind tabs (radio buttons and CSS), and a
click on any image enlarges it to the window (a checkbox and CSS), so every slice and image is reachable in
any browser, printed or offline.
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

from .io import atomic_write, png_bytes, to_numpy

__all__ = [
    "ReportFigure",
    "ReportSection",
    "METRIC_COLUMNS",
    "metrics_table_html",
    "render_report",
    "write_report",
    "calibration_gain",
    "plot_calibration",
    "calibration_table_html",
    "CALIBRATION_HOWTO",
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
    """A titled block of text and figures; ``level`` 2 or 3 picks the heading size.

    ``table``: name/value pairs shown as a two-column table under the text. ``slices``: ``(tab label,
    figures)`` pairs shown after ``figures`` as a slice viewer, one tab per slice (the first one open)."""

    title: str
    figures: Sequence[ReportFigure] = field(default_factory=list)
    text: str = ""
    level: int = 2
    slices: Sequence[tuple[str, Sequence[ReportFigure]]] = field(default_factory=list)
    table: Mapping[str, object] = field(default_factory=dict)


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
p.note{color:#555;font-size:.9em}
table.settings{border-collapse:collapse;font-size:.9em;margin:.4em 0 1em 0}
table.settings th,table.settings td{border:1px solid #ddd;padding:.2em .6em;text-align:left;vertical-align:top}
table.settings th{background:#f7f7f7;font-weight:600;white-space:nowrap}
label.zoom{cursor:zoom-in;display:inline-block}
label.zoom input{position:absolute;opacity:0;width:1px;height:1px}
label.zoom input:checked+img{position:fixed;top:1vh;left:1vw;width:98vw;height:98vh;max-width:none;
object-fit:contain;background:#fff;z-index:10;cursor:zoom-out;image-rendering:pixelated;
box-shadow:0 0 0 100vmax rgba(0,0,0,.6)}
div.viewer>input{position:absolute;opacity:0;width:1px;height:1px}
div.viewer>div.panel{display:none;border-top:1px solid #ccc;padding-top:.3em}
div.tabs label{display:inline-block;padding:.15em .6em;margin:0 .2em .3em 0;border:1px solid #bbb;
border-radius:3px;cursor:pointer;font-size:.9em;background:#f4f4f4}
span.flag{display:inline-block;background:#fde2e1;color:#8a1c14;border:1px solid #e9a19b;border-radius:3px;
padding:0 .4em;margin:0 .2em .1em 0;font-size:.85em;white-space:nowrap}
span.ok{color:#2d6a2d;font-size:.85em}
ul.guide{font-size:.9em;color:#333}
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


def flags_html(cal: Mapping) -> str:
    """The flags of a ``calibration`` entry (:func:`bayesmri.calibration.calibration_flags`) as HTML badges
    whose tooltip gives the numbers; "none" when no flag is raised."""
    from .calibration import calibration_flags

    flags = calibration_flags(dict(cal))
    if not flags:
        return '<span class="ok">none</span>'
    return "".join(f'<span class="flag" title="{html.escape(f.detail)}">{html.escape(f.label)}</span>' for f in flags)


def calibration_table_html(metrics: Mapping[str, Mapping[str, Mapping]]) -> str:
    """A table of the ``calibration`` entries of metrics rows (``docs/metrics_schema.md``), one row per
    method and pattern, with a column of automatic flags (:func:`flags_html`); empty string when no row
    has one."""
    body = []
    for method, per_pattern in metrics.items():
        for pattern, row in per_pattern.items():
            cal = row.get("calibration") if isinstance(row, Mapping) else None
            if not cal:
                continue
            cells = "".join(f"<td>{_fmt(cal.get(k), fmt)}</td>" for k, _, fmt in CALIBRATION_COLUMNS)
            body.append(f'<tr><td class="name">{html.escape(method)}</td><td>{html.escape(pattern)}</td>{cells}'
                        f'<td class="flags" style="text-align:left">{flags_html(cal)}</td></tr>')
    if not body:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in CALIBRATION_COLUMNS)
    return (f'<table class="metrics calibration"><thead><tr><th>method</th><th>pattern</th>{head}<th>flags</th></tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table>")


def _guide_items() -> list[str]:
    from .calibration import FLAG_THRESHOLDS as T

    return [
        "The dashed black curve is what exact posterior samples give, 10 log10(2p/(p+1)): 1.25 dB at p = 2, "
        "2.04 dB at 4, 2.55 dB at 8, at most 3.01 dB.",
        f"A curve near 0 dB (below {T['collapsed_below']:.0%} of the dashed curve, the lower shaded band) is "
        "flagged <b>samples collapsed</b>: averaging gains nothing because the samples are nearly one image, so "
        "the std map is far too small.",
        f"A curve above {T['overdispersed_above']:.0%} of the dashed curve (the upper shaded band) is flagged "
        "<b>over-dispersed</b>: the samples scatter more than their error, so the std map is too large.",
        "Between the bands but below the curve: too narrow or correlated samples (over-confident); usual when "
        "the prior does not match the anatomy.",
        f"<b>std does not follow error</b>: the Pearson correlation of the std map with the |error| map is "
        f"below {T['min_std_error_correlation']:.2f}, so the std map does not show where the errors are.",
        "The thresholds are defined once (bayesmri.calibration.FLAG_THRESHOLDS; docs/uncertainty.md).",
    ]


#: How to read the calibration table, one item per column (shown under it as a list).
CALIBRATION_HOWTO = (
    "P-gain: how much closer to the truth the mean of all P samples is than one sample, 10 log10(E_1/E_P); for "
    "exact posterior samples it is 10 log10(2P/(P+1)) (column 'exact sampler'). Near 0 dB the samples have "
    "collapsed onto one image (the std map is too small); far above, they scatter more than their error.",
    "Std ratio: RMS error of the mean over the spread an exact sampler would have given; 1 is calibrated, above 1 "
    "the std map is over-confident (errors larger than the std says), below 1 under-confident.",
    "Coverage: the fraction of pixels whose truth lies in the widest central interval the P samples form "
    "(nominal (P-1)/(P+1)); 90 % intervals need P >= 19.",
    "Corr(std, |error|): where the std map is high the error should be high.",
    "All on magnitudes, slices as replicates; with a prior that does not match the anatomy these mix sampler "
    "error and prior mismatch (docs/uncertainty.md).",
)


def _figure_html(fig: ReportFigure) -> str:
    # a click toggles the hidden checkbox, whose :checked state shows the image over the whole window
    data = base64.b64encode(png_bytes(fig.path)).decode("ascii")
    cap = html.escape(fig.caption or Path(fig.path).stem)
    return (
        f'<figure><label class="zoom" title="click to enlarge / shrink"><input type="checkbox">'
        f'<img src="data:image/png;base64,{data}" alt="{cap}"></label>'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def _viewer_html(key: str, slices) -> str:
    """Tabs (radio buttons; CSS shows the panel of the checked one) over one panel per slice."""
    radios, tabs, panels, rules = [], [], [], []
    for k, (label, figures) in enumerate(slices):
        rid, pid = f"{key}-s{k}", f"{key}-p{k}"
        checked = " checked" if k == 0 else ""
        radios.append(f'<input type="radio" name="{key}" id="{rid}" data-panel="{pid}"{checked}>')
        tabs.append(f'<label for="{rid}">{html.escape(label)}</label>')
        panels.append(f'<div class="panel" id="{pid}">' + "\n".join(_figure_html(f) for f in figures) + "</div>")
        rules.append(f"#{rid}:checked~#{pid}{{display:block}}#{rid}:checked~div.tabs label[for={rid}]"
                     "{background:#dde8f6;border-color:#5b84c4;font-weight:bold}")
    return (f'<div class="viewer" data-slices="{len(slices)}"><style>{"".join(rules)}</style>' + "".join(radios)
            + f'<div class="tabs">{"".join(tabs)}</div>' + "\n".join(panels) + "</div>")


def _section_html(sec: ReportSection, key: str = "v") -> str:
    lvl = 3 if sec.level >= 3 else 2
    out = [f"<h{lvl}>{html.escape(sec.title)}</h{lvl}>"]
    if sec.text:
        out.append(f'<p class="note">{html.escape(sec.text)}</p>')
    if sec.table:
        out.append(settings_table_html(sec.table))
    out.extend(_figure_html(f) for f in sec.figures)
    if sec.slices:
        out.append(_viewer_html(key, sec.slices))
    return "\n".join(out)


def settings_table_html(settings: Mapping[str, object]) -> str:
    """The run's settings as a two-column table (name, value)."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in settings.items())
    return f'<table class="settings"><tbody>{rows}</tbody></table>'


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
    meta : the settings of the run (version, methods, seed, ...), shown as the Settings table.
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
    out.append('<h2 id="settings">Settings</h2>')
    out.append(settings_table_html(meta))
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
        from .calibration import FLAG_THRESHOLDS as T

        out.append(cal_table)
        flags = (f" Flags (hover for the numbers): samples collapsed = P-gain below {T['collapsed_below']:.0%} of the "
                 f"exact sampler's; over-dispersed = above {T['overdispersed_above']:.0%} of it; std does not follow "
                 f"error = corr(std, |error|) below {T['min_std_error_correlation']:.2f}.")
        out.append('<p class="note">How to read it:</p><ul class="guide">'
                   + "".join(f"<li>{html.escape(t)}</li>" for t in CALIBRATION_HOWTO + (flags.strip(),)) + "</ul>")
    if calibration:
        out.append(
            '<p class="note">Gain of the mean of p samples over one sample, 10 log10(E_1/E_p), against '
            "10 log10(2p/(p+1)) for a correct sampler (Wen et al. sec. 4.1). How to read the plot:</p>"
        )
        out.append('<ul class="guide">' + "".join(f"<li>{item}</li>" for item in _guide_items()) + "</ul>")
        out.extend(_figure_html(f) for f in calibration)
    elif not cal_table:
        out.append('<p class="note">No method drew more than one sample: nothing to calibrate.</p>')
    out.extend(_section_html(s, f"v{i}") for i, s in enumerate(sections))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(path, title: str, **kwargs) -> Path:
    """Render (:func:`render_report`) and write the report atomically to ``path``."""
    return atomic_write(path, render_report(title, **kwargs))


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


def plot_calibration(path, curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str = "",
                     flags: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Plot measured calibration gains ``{label: (p, gain_db)}`` with the reference
    ``10 log10(2p/(p+1))`` into a PNG.

    The bands of the flags of :func:`bayesmri.calibration.calibration_flags` are shaded (below
    ``collapsed_below`` x the reference: "collapsed"; above ``overdispersed_above`` x: "over-dispersed"), and
    ``flags`` (``{label: [flag, ...]}``, e.g. from the metrics rows) are appended to the legend entries."""
    from .calibration import FLAG_THRESHOLDS as T
    from .io import _figure, _save_fig

    flags = flags or {}
    fig = _figure(1, 1, 4.0)
    fig.set_size_inches(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    pmax, top = 2, 0.0
    for label, (p, gain) in curves.items():
        extra = f" ({', '.join(flags[label])})" if flags.get(label) else ""
        ax.plot(p, gain, "o-", label=label + extra)
        pmax = max(pmax, int(np.max(p)))
        top = max(top, float(np.max(gain)))
    pr = np.linspace(1, pmax, 200)
    ref = 10 * np.log10(2 * pr / (pr + 1))
    top = max(top, T["overdispersed_above"] * ref[-1]) * 1.15 + 0.2
    ax.fill_between(pr, -10, T["collapsed_below"] * ref, color="tab:red", alpha=0.12, lw=0,
                    label=f"collapsed (< {T['collapsed_below']:.0%} of reference)")
    ax.fill_between(pr, T["overdispersed_above"] * ref, top + 10, color="tab:orange", alpha=0.12, lw=0,
                    label=f"over-dispersed (> {T['overdispersed_above']:.0%} of reference)")
    ax.plot(pr, ref, "k--", label="exact sampler 10 log10(2p/(p+1))")
    ax.set_xscale("log", base=2)
    ax.set_xlim(1, pmax)
    ax.set_ylim(min(-0.2, min((float(np.min(g)) for _, g in curves.values()), default=0.0) - 0.2), top)
    ax.set_xlabel("samples averaged p")
    ax.set_ylabel("gain of the p-sample mean over one sample [dB]")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save_fig(fig, path)
