#!/usr/bin/env python
"""Build the book and check every page of it in a real browser.

    python scripts/check_html.py                 # build with --all, then check every page
    python scripts/check_html.py --no-build      # check the pages already in _build/html
    python scripts/check_html.py --screenshots DIR   # also save a PNG of every page

Step 1 runs `jupyter-book build . --all --warningiserror --nitpick --keep-going` (`--all`
because an incremental build does not repeat the warnings of pages it did not re-read) and
fails on a non-zero exit code or on any "WARNING" in its output.

Step 2 serves _build/html on 127.0.0.1 (a free port) and opens every page, the ones of
_toc.yml first, in headless Chromium through Selenium. A page fails on:
  - math that MathJax did not typeset: raw `$$`, `\\(`, `\\[` or `$...$` TeX left in the text
    outside code, MathJax error nodes (mjx-merror), or math on a page where MathJax never ran;
  - images that did not load (naturalWidth == 0);
  - error outputs of notebook cells: tracebacks, `.output.error`, stderr with a Traceback;
  - browser console errors of level SEVERE, except failed loads of external resources
    (there is no network here; the book itself must not need one).
It prints one row per page and exits 1 if any page has a problem.

Chromium and chromedriver come from Debian: `bash scripts/setup_chromium.sh`.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 30

# Failures to load these are expected offline and are not the book's fault.
EXTERNAL_LOAD_ERROR = re.compile(r"net::ERR_|Failed to load resource")


# ----------------------------------------------------------------------------- build
def jupyter_book_exe() -> str:
    """The jupyter-book next to this Python (the project's venv), else the one on PATH."""
    here = Path(sys.executable).parent / "jupyter-book"
    if here.exists():
        return str(here)
    found = shutil.which("jupyter-book")
    if found is None:
        sys.exit("check_html: jupyter-book not found; install the project with its book extra: "
                 'pip install -e ".[book]"')
    return found


def build_book(root: Path) -> tuple[int, str]:
    cmd = [jupyter_book_exe(), "build", str(root), "--all",
           "--warningiserror", "--nitpick", "--keep-going"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    print(f"build: exit code {proc.returncode} in {time.perf_counter() - t0:.1f} s", flush=True)
    return proc.returncode, out


# ----------------------------------------------------------------------------- pages
def toc_pages(root: Path) -> list[str]:
    """The html paths (relative to _build/html) of the pages listed in _toc.yml, in order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return [str(Path(f).with_suffix("")) + ".html" for f in files]


def all_pages(html_dir: Path, root: Path) -> tuple[list[str], list[str]]:
    """(pages to check, toc pages missing from the build)."""
    toc = toc_pages(root)
    missing = [p for p in toc if not (html_dir / p).exists()]
    skip_dirs = {"_static", "_sources", "_images", "_downloads"}
    others = sorted(
        str(p.relative_to(html_dir)) for p in html_dir.rglob("*.html")
        if not (set(p.relative_to(html_dir).parts) & skip_dirs)
    )
    pages = [p for p in toc if p not in missing] + [p for p in others if p not in toc]
    return pages, missing


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the table readable
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# ----------------------------------------------------------------------------- browser
def make_driver(profile_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            sys.exit(f"check_html: {exe} is missing; install it with: bash scripts/setup_chromium.sh")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1280,1600", f"--user-data-dir={profile_dir}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    return driver


# Runs in the page: waits for MathJax (if the page loads it) and for every image, then
# collects what is wrong. Returns a dict of findings.
PAGE_PROBE_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const out = {mathjax: "absent", raw_math: [], merror: [], math_nodes: 0, typeset: 0,
               broken_images: [], error_outputs: []};
  const mjScript = [...document.scripts].some(s => /mathjax/i.test(s.src || ""));
  out.math_nodes = document.querySelectorAll(".math").length;
  if (mjScript) {
    // The script is deferred, so it has run (or failed to load) once the page has loaded;
    // allow a little more time, then MathJax.startup.promise must exist.
    let t0 = Date.now();
    while (!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)) {
      if (document.readyState === "complete" && Date.now() - t0 > 3000) {
        out.mathjax = "did not load"; break;
      }
      await sleep(50);
    }
    if (out.mathjax !== "did not load") {
      try { await window.MathJax.startup.promise; out.mathjax = "typeset"; }
      catch (e) { out.mathjax = "failed: " + e; }
    }
  }
  out.typeset = document.querySelectorAll("mjx-container").length;
  out.merror = [...document.querySelectorAll("mjx-merror")].map(
      e => (e.getAttribute("data-mjx-error") || e.textContent || "").slice(0, 80));

  // Text outside code and outside typeset math that still looks like TeX.
  const skip = new Set(["PRE", "CODE", "KBD", "SAMP", "SCRIPT", "STYLE", "TEXTAREA", "NOSCRIPT",
                        "MJX-CONTAINER", "MJX-ASSISTIVE-MML", "TEMPLATE"]);
  const inSkipped = node => {
    for (let el = node.parentElement; el; el = el.parentElement) {
      if (skip.has(el.tagName) || el.classList.contains("highlight")) return true;
    }
    return false;
  };
  const patterns = [/\$\$/, /\\\(/, /\\\[/, /\$[^$\n]*[\\^_{}][^$\n]*\$/, /\$[A-Za-z]\$/];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.nodeValue;
    if (!/[$\\]/.test(text) || inSkipped(n)) continue;
    if (patterns.some(p => p.test(text))) out.raw_math.push(text.trim().slice(0, 80));
  }

  // Images: make lazy ones load, wait for all, then look for the broken ones.
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener("load", r); i.addEventListener("error", r); setTimeout(r, 10000);
  })));
  out.broken_images = imgs.filter(i => i.naturalWidth === 0).map(i => i.currentSrc || i.src);

  // Error outputs of notebook cells (myst-nb renders tracebacks as .output.traceback).
  const lastLine = el => {
    const text = (el.querySelector("pre") || el).textContent;
    const lines = text.split("\n").map(l => l.trim()).filter(Boolean);
    return (lines.length ? lines[lines.length - 1] : "").slice(0, 80);
  };
  for (const el of document.querySelectorAll(
      ".output.error, .output.traceback, div.cell_output .traceback")) {
    out.error_outputs.push(lastLine(el));
  }
  for (const el of document.querySelectorAll(".output.stderr")) {
    if (el.textContent.includes("Traceback")) out.error_outputs.push("stderr: " + lastLine(el));
  }
  done(out);
})().catch(e => done({fatal: String(e)}));
"""


def console_problems(entries, base_url: str) -> list[str]:
    problems = []
    host = urlparse(base_url).netloc
    for e in entries:
        if e.get("level") != "SEVERE":
            continue
        msg = e.get("message", "")
        url = msg.split(" ", 1)[0]
        external = url.startswith(("http://", "https://")) and urlparse(url).netloc != host
        if external and EXTERNAL_LOAD_ERROR.search(msg):
            continue  # no network here: a CDN, a font or a launch-button host
        if urlparse(url).path == "/favicon.ico":
            continue  # the browser asks for it by itself; the book has none
        problems.append("console: " + msg[:160])
    return problems


def check_page(driver, base_url: str, page: str, shots: Path | None) -> list[str]:
    driver.get_log("browser")  # drop what earlier pages left behind
    driver.get(base_url + page)
    found = driver.execute_async_script(PAGE_PROBE_JS)
    problems: list[str] = []
    if "fatal" in found:
        return [f"probe failed: {found['fatal']}"]
    if found["mathjax"] not in ("absent", "typeset"):
        problems.append(f"MathJax {found['mathjax']}")
    if found["math_nodes"] and found["typeset"] == 0:
        problems.append(f"{found['math_nodes']} math elements but MathJax typeset none "
                        "(is MathJax loaded from a CDN?)")
    problems += [f"MathJax error (mjx-merror): {msg!r}" for msg in found["merror"]]
    problems += [f"unrendered math: {t!r}" for t in found["raw_math"]]
    problems += [f"missing image: {src}" for src in found["broken_images"]]
    problems += [f"error output: {t}" for t in found["error_outputs"]]
    problems += console_problems(driver.get_log("browser"), base_url)
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / (page.replace("/", "__").removesuffix(".html") + ".png")))
    return problems


def check_site(html_dir: Path, root: Path, shots: Path | None) -> int:
    pages, missing = all_pages(html_dir, root)
    server, base_url = serve(html_dir)
    rows: list[tuple[str, float, list[str]]] = [(p, 0.0, ["listed in _toc.yml but not built"])
                                                for p in missing]
    with tempfile.TemporaryDirectory(prefix="minilooped-chromium-") as profile:
        driver = make_driver(profile)
        try:
            for page in pages:
                t0 = time.perf_counter()
                try:
                    problems = check_page(driver, base_url, page, shots)
                except Exception as exc:  # a page that hangs or crashes the probe
                    problems = [f"could not check: {type(exc).__name__}: {str(exc)[:120]}"]
                rows.append((page, time.perf_counter() - t0, problems))
        finally:
            driver.quit()
            server.shutdown()

    width = max(len(p) for p, _, _ in rows)
    print(f"\n{'page'.ljust(width)}  {'time':>6}  result")
    print(f"{'-' * width}  {'-' * 6}  {'-' * 30}")
    n_bad = 0
    for page, secs, problems in rows:
        print(f"{page.ljust(width)}  {secs:5.1f}s  {'ok' if not problems else 'FAIL'}")
        for prob in problems:
            print(f"{''.ljust(width)}          - {prob}")
        n_bad += bool(problems)
    print(f"\n{len(rows)} pages checked, {n_bad} with problems")
    return 1 if n_bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-build", action="store_true", help="check _build/html as it is")
    ap.add_argument("--screenshots", type=Path, default=None, metavar="DIR",
                    help="save a PNG of every page into DIR")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if not args.no_build:
        code, out = build_book(ROOT)
        warnings = [line for line in out.splitlines() if "WARNING" in line]
        if code != 0 or warnings:
            print(out[-6000:])
            print(f"check_html: the book build failed (exit code {code}, "
                  f"{len(warnings)} warning line(s)); fix the build before the pages.")
            return 1
    html_dir = ROOT / "_build" / "html"
    if not (html_dir / "index.html").exists():
        print(f"check_html: {html_dir} has no index.html; build the book first (make book).")
        return 1
    code = check_site(html_dir, ROOT, args.screenshots)
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
