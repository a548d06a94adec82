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


def test_demo_reports_calibration_of_a_sampler_against_the_truth(tmp_path):
    from bayesmri import methods
    from bayesmri.commands.demo import run_demo

    @methods.register_method("spread-test", "zero-filled plus known noise", stochastic=True)
    def _spread(sample, n_samples=1, generator=None, maps=None, **kw):
        zf = methods.get_method("zf")(sample, maps=maps).mean
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        noise = torch.randn((n_samples,) + tuple(zf.shape), generator=g, dtype=zf.real.dtype)
        return methods.SamplerResult.from_samples(zf + 0.05 * float(zf.abs().max()) * noise)

    try:
        met = run_demo(tmp_path / "d", ["zf", "spread-test"], n_slices=2, n_samples=6, size=64, progress=False,
                       skip_failures=False)
    finally:
        methods._REGISTRY.pop("spread-test", None)
    cal = met["spread-test"]["gro-r4"]["calibration"]
    assert cal["n_samples"] == 6 and "calibration" not in met["zf"]["gro-r4"]
    # the samples scatter around the zero-filled image, not the truth: the mean is no closer to the truth
    # than the samples' spread says, so the P-gain sits far from an exact sampler's 10 log10(12/7)
    assert abs(cal["p_gain_reference_db"] - 10 * np.log10(12 / 7)) < 1e-6
    assert cal["std_ratio"] > 1.5
    html = (tmp_path / "d" / "report.html").read_text()
    assert '<table class="metrics calibration">' in html and "spread-test" in html.split("How to read it")[0]
