"""Open a demo report.html in headless Chromium: every inlined image decodes, every slice of every pattern
can be brought up with its tab, a click enlarges an image, and a collapsed sampler is flagged."""
import re
import shutil
import subprocess

import pytest
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")

# Runs after the page's load event; writes what it found into attributes of <body>. Each slice tab is
# clicked as a reader would; its panel must then be the one shown, with every image in it decoded.
_PROBE = """<script>window.addEventListener("load", function () {
  var im = document.images, ok = 0;
  for (var i = 0; i < im.length; i++) { if (im[i].complete && im[i].naturalWidth > 0) ok++; }
  var b = document.body;
  b.setAttribute("data-images", im.length);
  b.setAttribute("data-images-ok", ok);
  b.setAttribute("data-tables", document.querySelectorAll("table.metrics").length);
  var radios = document.querySelectorAll("div.viewer > input[type=radio]"), reached = 0;
  for (var r = 0; r < radios.length; r++) {
    var lab = document.querySelector("label[for='" + radios[r].id + "']");
    lab.click();
    var panel = document.getElementById(radios[r].getAttribute("data-panel"));
    var shown = panel.getBoundingClientRect().height > 0, imgs = panel.querySelectorAll("img"), good = imgs.length > 0;
    for (var j = 0; j < imgs.length; j++) { good = good && imgs[j].naturalWidth > 0 && imgs[j].getBoundingClientRect().width > 0; }
    var others = panel.parentNode.querySelectorAll("div.panel"), alone = true;
    for (var k = 0; k < others.length; k++) { if (others[k] !== panel && others[k].getBoundingClientRect().height > 0) alone = false; }
    if (shown && good && alone) reached++;
  }
  b.setAttribute("data-slices", radios.length);
  b.setAttribute("data-slices-reached", reached);
  var z = document.querySelector("label.zoom"), zi = z.querySelector("img"), w0 = zi.getBoundingClientRect().width;
  z.click();
  b.setAttribute("data-zoomed", zi.getBoundingClientRect().width > Math.max(w0, 0.9 * window.innerWidth) ? 1 : 0);
});</script>"""


def _probe(html_path, tmp_path, extra=""):
    text = html_path.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", extra + _PROBE + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--window-size=1200,900", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, f"chromium produced no DOM (rc={proc.returncode}): {proc.stderr[-500:]}"
    attrs = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', body.group(0)))
    return {k: int(v) for k, v in attrs.items()}


def test_demo_report_images_slices_and_flags_in_chromium(tmp_path):
    from bayesmri import methods
    from bayesmri.demo import run_demo

    @methods.register_method("collapsed-test", "zero-filled with a negligible spread", stochastic=True)
    def _collapsed(sample, n_samples=1, generator=None, maps=None, **kw):
        zf = methods.get_method("zf")(sample, maps=maps).mean
        noise = torch.randn((n_samples,) + tuple(zf.shape), generator=generator, dtype=zf.real.dtype)
        return methods.SamplerResult.from_samples(zf + 1e-5 * float(zf.abs().max()) * noise)

    out = tmp_path / "demo"
    try:
        met = run_demo(out, ["zf", "sense", "collapsed-test"], n_slices=2, size=64, progress=False,
                       skip_failures=False)
    finally:
        methods.registry._REGISTRY.pop("collapsed-test", None)
    for pattern in ("gro-r4", "poisson-r8"):
        assert "samples collapsed" in met["collapsed-test"][pattern]["calibration"]["flags"]
    html = out / "report.html"
    text = html.read_text()
    cal = text.split('<table class="metrics calibration">')[1].split("</table>")[0]
    assert cal.count('<span class="flag"') >= 2 and "samples collapsed" in cal
    n_img = text.count("<img ")
    res = _probe(html, tmp_path)
    assert res["data-images"] == n_img >= 2 * 2 * 2 + 2  # a table and a mask per slice and pattern, 2 calibration plots
    assert res["data-images-ok"] == n_img  # every inlined PNG decoded to a non-empty image
    assert res["data-tables"] == 3  # gro-r4, poisson-r8 and the calibration table
    assert res["data-slices"] == 4 and res["data-slices-reached"] == 4  # 2 patterns x 2 slices, each reachable
    assert res["data-zoomed"] == 1
    # the probe can fail: a corrupt image is reported as not loaded
    bad = _probe(html, tmp_path, extra='<img src="data:image/png;base64,iVBORw0KGgoAAAA=">')
    assert bad["data-images"] == n_img + 1 and bad["data-images-ok"] == n_img
