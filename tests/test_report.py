"""HTML report: self-contained (images inlined), metrics table, calibration helper."""
import base64
import re

import numpy as np
import pytest
import torch

from bayesmri import io, report


def _metrics():
    row = dict(psnr=30.0, ssim=0.9, nmse=0.01, cpsnr=29.0, time_per_sample_s=0.5, nfe=0, n_slices=2, n_samples=1)
    better = dict(row, psnr=33.0, ssim=0.95, nmse=0.005)
    return {"zf": {"gro-r4": row, "poisson-r8": row}, "tv": {"gro-r4": better, "poisson-r8": row}}


def test_report_is_self_contained_and_inlines_pngs(tmp_path):
    img = np.linspace(0, 1, 64).reshape(8, 8)
    png = io.save_png(tmp_path / "gt.png", img, title="ground <truth>")
    sec = report.ReportSection("gro-r4", [report.ReportFigure(png, "ground truth & co")], text="a <b>")
    out = report.write_report(
        tmp_path / "r.html", "Demo <report>", metrics=_metrics(), sections=[sec], meta={"seed": 0}
    )
    text = out.read_text()
    # no external resources: every src is a data URI, no <link>/<script src>
    srcs = re.findall(r'src="([^"]+)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in text and "<script" not in text
    # the inlined bytes are exactly the PNG file
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == png.read_bytes()
    # text is escaped
    assert "Demo &lt;report&gt;" in text and "ground truth &amp; co" in text and "a &lt;b&gt;" in text
    # one table per pattern, one row per method, best PSNR marked
    assert text.count('<table class="metrics"') == 2
    gro = text.split('data-pattern="gro-r4"')[1].split("</table>")[0]
    assert '<td class="best">33.00</td>' in gro and "30.00" in gro
    assert "No method drew more than one sample" in text


def test_report_refuses_non_png(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        report.write_report(tmp_path / "r.html", "t", sections=[report.ReportSection("s", [report.ReportFigure(bad)])])
    assert not (tmp_path / "r.html").exists()


def test_calibration_gain_matches_reference_for_exact_gaussian_samples(tmp_path):
    # posterior N(mu, 1) per pixel, truth drawn from the same posterior: E_1/E_p = 2p/(p+1) exactly
    g = torch.Generator().manual_seed(0)
    n = 20000
    mu = torch.randn(n, generator=g)
    truth = mu + torch.randn(n, generator=g)
    samples = mu + torch.randn(16, n, generator=g)
    p, gain = report.calibration_gain(samples, truth)
    assert list(p) == [1, 2, 4, 8, 16]
    ref = 10 * np.log10(2 * p / (p + 1))
    np.testing.assert_allclose(gain, ref, atol=0.15)
    # an overconfident sampler (samples collapse to the mean) shows no gain at all
    p2, gain2 = report.calibration_gain(mu.expand(16, n) + 1e-3 * samples, truth)
    assert np.all(np.abs(gain2[1:]) < 0.05) and gain2[-1] < ref[-1] - 2
    png = report.plot_calibration(tmp_path / "cal.png", {"exact": (p, gain)})
    html = report.render_report("t", calibration=[report.ReportFigure(png, "calibration")])
    assert "nothing to calibrate" not in html and html.count("data:image/png;base64,") == 1
    with pytest.raises(ValueError, match="at least 2"):
        report.calibration_gain(samples[:1], truth)


def test_calibration_table_reads_the_metrics_rows_and_explains_itself():
    cal = dict(n_samples=8, p_gain_db=0.71, p_gain_reference_db=2.55, std_ratio=1.83, coverage=0.61,
               coverage_nominal=0.778, std_error_correlation=0.42)
    met = _metrics()
    met["pula"] = {"gro-r4": dict(met["tv"]["gro-r4"], n_samples=8, calibration=cal)}
    html = report.render_report("t", metrics=met)
    table = html.split('<table class="metrics calibration">')[1].split("</table>")[0]
    # one row (only pula has calibration), with its numbers in the documented columns
    assert table.count("<tr>") == 2 and "pula" in table and "zf" not in table
    for text in ("0.71", "2.55", "1.83", "0.610", "0.778", "0.42"):
        assert f"<td>{text}</td>" in table
    assert "How to read it" in html and "nothing to calibrate" not in html
    # without calibration entries: no table, and the report says why the slot is empty
    assert '<table class="metrics calibration">' not in report.render_report("t", metrics=_metrics())


def test_demo_reports_calibration_of_a_sampler_against_the_truth(tmp_path, monkeypatch):
    from bayesmri import methods
    from bayesmri.demo import run_demo

    @methods.register_method("spread-test", "zero-filled plus known noise", stochastic=True)
    def _spread(sample, n_samples=1, generator=None, maps=None, **kw):
        zf = methods.get_method("zf")(sample, maps=maps).mean
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        noise = torch.randn((n_samples,) + tuple(zf.shape), generator=g, dtype=zf.real.dtype)
        return methods.SamplerResult.from_samples(zf + 0.05 * float(zf.abs().max()) * noise)

    scales = []  # (what, vmax) of every |error| / std figure the demo writes
    grid, table = io.save_image_grid_native, io.save_image_table

    def spy_grid(path, images, titles=None, **kw):
        if kw.get("label") in ("|error|", "posterior std"):
            scales.append((kw["label"], kw["vmax"]))
        return grid(path, images, titles, **kw)

    def spy_table(path, cells, labels, columns, **kw):
        scales.extend((c["title"], c["vmax"]) for c in columns if c["title"] in ("|error|", "posterior std"))
        return table(path, cells, labels, columns, **kw)

    monkeypatch.setattr(io, "save_image_grid_native", spy_grid)
    monkeypatch.setattr(io, "save_image_table", spy_table)
    try:
        met = run_demo(tmp_path / "d", ["zf", "sense", "spread-test"], n_slices=2, n_samples=6, size=64,
                       progress=False, skip_failures=False)
    finally:
        methods.registry._REGISTRY.pop("spread-test", None)
    # one scale for the |error| and std maps of every method, slice and pattern (issue 24)
    kinds = {k for k, _ in scales}
    assert {"|error|", "posterior std"} <= kinds and len(scales) >= 2 * (3 + 1 + 2 * 2)
    assert len({v for _, v in scales}) == 1 and scales[0][1] > 0
    assert met["sense"]["gro-r4"]["per_slice"]["psnr"][0] != met["sense"]["gro-r4"]["per_slice"]["psnr"][1]
    cal = met["spread-test"]["gro-r4"]["calibration"]
    assert cal["n_samples"] == 6 and "calibration" not in met["zf"]["gro-r4"]
    # the samples scatter around the zero-filled image, not the truth: the mean is no closer to the truth
    # than the samples' spread says, so the P-gain sits far from an exact sampler's 10 log10(12/7)
    assert abs(cal["p_gain_reference_db"] - 10 * np.log10(12 / 7)) < 1e-6
    assert cal["std_ratio"] > 1.5
    html = (tmp_path / "d" / "report.html").read_text()
    assert '<table class="metrics calibration">' in html and "spread-test" in html.split("How to read it")[0]


# ------------------------------------------------------------------------------------- flags (issue 24)
def test_calibration_flags_follow_the_thresholds():
    from bayesmri.calibration import FLAG_THRESHOLDS as T, calibration_flags

    def labels(**cal):
        return [f.label for f in calibration_flags(cal)]

    ref = 10 * np.log10(16 / 9)  # P = 8: 2.50 dB
    # measured cases of docs/uncertainty.md: cINN 0.15 dB, annealed ULA 3.37, pULA 40 levels 2.77, exact 2.47
    assert labels(p_gain_db=0.15, p_gain_reference_db=ref) == ["samples collapsed"]
    assert labels(p_gain_db=3.37, p_gain_reference_db=ref) == ["over-dispersed"]
    assert labels(p_gain_db=2.77, p_gain_reference_db=ref) == labels(p_gain_db=2.47, p_gain_reference_db=ref) == []
    # the thresholds decide, on either side
    lo, hi = T["collapsed_below"] * ref, T["overdispersed_above"] * ref
    assert labels(p_gain_db=lo - 1e-3, p_gain_reference_db=ref) == ["samples collapsed"]
    assert labels(p_gain_db=lo + 1e-3, p_gain_reference_db=ref) == []
    assert labels(p_gain_db=hi + 1e-3, p_gain_reference_db=ref) == ["over-dispersed"]
    assert labels(p_gain_db=-0.2, p_gain_reference_db=ref) == ["samples collapsed"]
    c = T["min_std_error_correlation"]
    assert labels(std_error_correlation=c - 0.01) == ["std does not follow error"]
    assert labels(std_error_correlation=c + 0.01) == []
    assert labels(p_gain_db=0.0, p_gain_reference_db=ref, std_error_correlation=0.05) == [
        "samples collapsed", "std does not follow error"]
    # missing or undefined numbers raise nothing; overrides replace the defaults
    assert labels() == labels(p_gain_db=float("nan"), p_gain_reference_db=ref, std_error_correlation=None) == []
    assert [f.label for f in calibration_flags({"p_gain_db": 2.0, "p_gain_reference_db": ref},
                                               {"collapsed_below": 0.9})] == ["samples collapsed"]


def test_report_flags_a_collapsed_and_an_over_dispersed_sampler(monkeypatch):
    from bayesmri import calibration

    met = _metrics()
    ref = 10 * np.log10(8 / 5)
    met["cinn"] = {"gro-r4": dict(met["tv"]["gro-r4"], n_samples=4,
                                  calibration=dict(n_samples=4, p_gain_db=0.05, p_gain_reference_db=ref,
                                                   std_error_correlation=0.6))}
    met["ula"] = {"gro-r4": dict(met["tv"]["gro-r4"], n_samples=4,
                                 calibration=dict(n_samples=4, p_gain_db=3.0, p_gain_reference_db=ref,
                                                  std_error_correlation=0.1))}
    html = report.render_report("t", metrics=met)
    table = html.split('<table class="metrics calibration">')[1].split("</table>")[0]
    cinn, ula = table.split('<td class="name">cinn</td>')[1].split("</tr>")[0], table.split(
        '<td class="name">ula</td>')[1].split("</tr>")[0]
    assert ">samples collapsed<" in cinn and "over-dispersed" not in cinn and "0.05 dB" in cinn  # tooltip numbers
    assert ">over-dispersed<" in ula and ">std does not follow error<" in ula and "collapsed" not in ula
    # the guide quotes the thresholds from their one definition
    assert "below 25% of the exact sampler" in html
    monkeypatch.setitem(calibration.FLAG_THRESHOLDS, "collapsed_below", 0.4)
    assert "below 40% of the exact sampler" in report.render_report("t", metrics=met)


def test_slice_viewer_has_a_tab_and_a_panel_per_slice(tmp_path):
    png = io.save_png(tmp_path / "a.png", np.eye(8))
    sec = report.ReportSection("p", slices=[(f"slice {i}", [report.ReportFigure(png, f"s{i}")]) for i in range(3)])
    html = report.render_report("t", sections=[sec, sec])
    assert html.count('type="radio"') == 6 and html.count('class="panel"') == 6
    # one radio group per viewer, the first slice of each open, every panel with its own CSS rule
    assert html.count('name="v0"') == html.count('name="v1"') == 3 and html.count(" checked>") == 2
    for v in ("v0", "v1"):
        for i in range(3):
            assert f"#{v}-s{i}:checked~#{v}-p{i}{{display:block}}" in html
    assert "<script" not in html and html.count('class="zoom"') == 6


def test_image_table_places_every_pixel_and_keeps_column_scales(tmp_path):
    from PIL import Image

    img = np.zeros((40, 50))
    img[::2, ::2] = 1.0
    cols = [dict(title="a", vmin=0, vmax=1), dict(title="b", cmap="inferno", vmin=0, vmax=2)]
    p = io.save_image_table(tmp_path / "t.png", [[img, None], [img, img]], ["row one", "two"], cols, zoom=1)
    a = np.asarray(Image.open(p).convert("RGB")).astype(int)
    g = a[..., 1]
    # header 8 + 50 px, rows of 40 + 8 px; the label column is max(64, 12 + 6 * len("row one")) = 64 px wide
    first = g[58:98, 64:114]
    assert (first[::2, ::2] > 250).all() and (first[1::2, :] < 5).all() and (first[:, 1::2] < 5).all()
    assert (a[58:98, 122:172] == 255).all()  # the empty cell stays blank
    # column b shows the same image on [0, 2] in inferno: 1.0 is mid-scale (red), not white
    second = a[106:146, 122:172]
    assert abs(second[0, 0, 0] - second[0, 0, 2]) > 60
    with pytest.raises(ValueError, match="one size"):
        io.save_image_table(tmp_path / "u.png", [[img, np.zeros((4, 4))]], ["r"], cols)
