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
