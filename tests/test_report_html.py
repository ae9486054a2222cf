"""report.html as a reader sees it: rendered in headless Chromium, it requests nothing outside the file, every
image loads, and the verdict summary comes above the first figure.

Chromium (Debian's `chromium`) is looked up on PATH; if missing, the test tries `apt-get install -y chromium`
(as root only) and is skipped with the reason when that fails. The page is probed by a copy of report.html with
a small script appended (the report itself carries no script): it reads the Resource Timing entries (every URL
the page fetched), each image's load state and the positions of the summary and the first figure.
"""
from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reports_fixtures import gqa_rows, known_ratio_rows, write_run  # noqa: E402

from retnet_bench.reports import write_report  # noqa: E402

PROBE = """<script>
window.addEventListener('load', () => {
  const fig = document.querySelector('figure'), summary = document.getElementById('summary');
  const out = {
    resources: performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:')),
    images: [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, src: i.src.slice(0, 40)})),
    summaryTop: summary ? summary.getBoundingClientRect().top : null,
    figureTop: fig ? fig.getBoundingClientRect().top : null,
    title: document.querySelector('h1').textContent,
  };
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        res = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=900)
        if res.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")
        pytest.skip(f"chromium not installed and `apt-get install -y chromium` failed: {res.stderr[-200:]}")
    pytest.skip("chromium not on PATH and it cannot be installed here (needs apt-get as root)")


def _run_chromium(browser: str, args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND"]  # nothing outside the machine; a fetch would still be logged
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)


def probe(browser: str, page: Path) -> dict:
    probed = page.with_name("probe.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    res = _run_chromium(browser, ["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()])
    found = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert found, f"chromium gave no probe output (rc {res.returncode}): {res.stderr[-500:]}"
    return json.loads(html_lib.unescape(found.group(1)))


@pytest.fixture(scope="module")
def browser() -> str:
    return _chromium()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = write_run(tmp_path_factory.mktemp("html"), known_ratio_rows() + gqa_rows())
    return write_report([run], run.parent / "out")["report_html"]


def test_report_renders_self_contained_with_the_summary_first(browser, report):
    seen = probe(browser, report)
    assert seen["resources"] == [], f"the report fetched {seen['resources']}"
    assert len(seen["images"]) >= 6 and all(i["ok"] for i in seen["images"]), seen["images"]
    assert seen["summaryTop"] is not None and seen["figureTop"] is not None
    assert seen["summaryTop"] < seen["figureTop"]
    assert "Synthetic GPU 80GB" in seen["title"]


def test_probe_catches_an_external_resource_and_a_broken_image(browser, report, tmp_path):
    """The check above can fail: a page with an external image is caught on both counts."""
    bad = tmp_path / "bad.html"
    bad.write_text(report.read_text().replace("<body>", '<body><img src="http://example.invalid/x.png">'))
    seen = probe(browser, bad)
    assert any("example.invalid" in r for r in seen["resources"])
    assert not all(i["ok"] for i in seen["images"])


def test_screenshot_is_taken(browser, report, tmp_path):
    shot = tmp_path / "shot.png"
    res = _run_chromium(browser, [f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars",
                                  report.as_uri()])
    assert shot.is_file() and shot.stat().st_size > 20_000, res.stderr[-500:]
