"""Open a demo report.html in headless Chromium and check that every inlined image decodes."""
import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")

# Runs after the page's load event; writes how many images decoded into attributes of <body>.
_PROBE = """<script>window.addEventListener("load", function () {
  var im = document.images, ok = 0;
  for (var i = 0; i < im.length; i++) { if (im[i].complete && im[i].naturalWidth > 0) ok++; }
  document.body.setAttribute("data-images", im.length);
  document.body.setAttribute("data-images-ok", ok);
  document.body.setAttribute("data-tables", document.querySelectorAll("table.metrics").length);
});</script>"""


def _probe(html_path, tmp_path, extra=""):
    text = html_path.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", extra + _PROBE + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, f"chromium produced no DOM (rc={proc.returncode}): {proc.stderr[-500:]}"
    attrs = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', body.group(0)))
    return {k: int(v) for k, v in attrs.items()}


def test_demo_report_images_load_in_chromium(tmp_path):
    from bayesmri.commands.demo import run_demo

    out = tmp_path / "demo"
    run_demo(out, ["zf", "sense"], n_slices=1, size=64, progress=False)
    html = out / "report.html"
    n_img = html.read_text().count("<img ")
    res = _probe(html, tmp_path)
    assert res["data-images"] == n_img >= 8
    assert res["data-images-ok"] == n_img  # every inlined PNG decoded to a non-empty image
    assert res["data-tables"] == 2  # gro-r4 and poisson-r8
    # the probe can fail: a corrupt image is reported as not loaded
    bad = _probe(html, tmp_path, extra='<img src="data:image/png;base64,iVBORw0KGgoAAAA=">')
    assert bad["data-images"] == n_img + 1 and bad["data-images-ok"] == n_img
