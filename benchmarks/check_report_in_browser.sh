#!/usr/bin/env bash
# Load a glassformer report (index.html) in headless Chromium with the network off, fail on any console error,
# check the page's structure and embedded plots, and save a screenshot to look at. Where report.json lies beside
# the page, the parts it holds must be drawn: each comparison's reasoning in the verdict, a frontier plot per
# level with a curve per variant, error bars where there are intervals, the stability and sanity tables.
#
#   benchmarks/check_report_in_browser.sh runs/demo/report [/tmp/report.png]
#
# Needs Debian's chromium (`apt-get install -y chromium`) and a Python with glassformer's venv (PYTHON=...,
# default python3). The network is off in three ways: a proxy on a closed local port, no background networking,
# and the page's own Content-Security-Policy (default-src 'none'); the page is opened through a file:// URL.
# Keep screenshots out of git (the default path is under /tmp).
set -euo pipefail
report="${1:?usage: $0 REPORT_DIR_OR_INDEX_HTML [SCREENSHOT_PNG]}"
shot="${2:-/tmp/report.png}"
PYTHON="${PYTHON:-python3}"
[ -d "$report" ] && report="$report/index.html"
[ -f "$report" ] || { echo "check_report_in_browser: $report does not exist" >&2; exit 2; }
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "check_report_in_browser: no chromium found (apt-get install -y chromium)" >&2; exit 2; }
url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --no-first-run --disable-sync --disable-extensions --proxy-server=127.0.0.1:9 --proxy-bypass-list='<-loopback>'
       --enable-logging=stderr --v=0 --hide-scrollbars)

# 1. The DOM after loading (and the console log of that load).
timeout 120 "$browser" "${flags[@]}" --user-data-dir="$work/profile1" --dump-dom "$url" \
    >"$work/dom.html" 2>"$work/dom.log" || { cat "$work/dom.log" >&2; echo "chromium failed to load $url" >&2; exit 1; }
# 2. The screenshot (a tall window: the whole report, plots included).
timeout 120 "$browser" "${flags[@]}" --user-data-dir="$work/profile2" --window-size=1400,3000 \
    --screenshot="$shot" "$url" >"$work/shot.out" 2>"$work/shot.log" || { cat "$work/shot.log" >&2; exit 1; }

status=0
if grep -E "Uncaught|ERROR:CONSOLE|Refused to|net::ERR_" "$work/dom.log" "$work/shot.log"; then
    echo "check_report_in_browser: the page logged errors (above)" >&2
    status=1
fi
"$PYTHON" - "$work/dom.html" "$report" "$shot" <<'PY' || status=1
import base64, html, json, os, re, sys
from xml.etree import ElementTree

need_error_bars, need_frontier = False, {}


def expected_parts(text, path):
    """What the page must show of report.json's comparisons, frontier, intervals, stability and sanity."""
    global need_error_bars
    if not os.path.isfile(path):
        return []
    data = json.load(open(path, encoding="utf-8"))
    out = []
    start = text.find('id="verdict"')
    verdict = html.unescape(re.sub(r"<[^>]+>", " ", text[start:text.find("</section>", start)]))
    verdict = " ".join(verdict.split())
    for c in data.get("comparisons") or []:
        reason = " ".join(str(c.get("reason") or "").split())
        if reason and reason not in verdict.split("Details")[0]:
            out.append(f"the reasoning of {c.get('variant')} ({c.get('matched')}) is not in the verdict")
    for level, variants in (data.get("frontier") or {}).items():
        drawn = [v for v, pts in (variants or {}).items()
                 if any(p.get("geomean") and p.get("val_loss") is not None for p in pts or [])]
        if drawn:
            need_frontier[level] = drawn
    if need_frontier and 'id="frontier"' not in text:
        out.append("section #frontier is missing although report.json has a frontier")
    if (data.get("stability") or data.get("controls_sanity")) and 'id="checks"' not in text:
        out.append("section #checks is missing although report.json has stability or controls_sanity")
    for m in data.get("models", []):
        sizes = [s.get("interval") for s in (m.get("sizes") or {}).values()]
        sizes += [c.get("interval") for t in m.get("tasks", []) for c in (t.get("circuits") or {}).values()]
        need_error_bars |= any(s for s in sizes)
    return out


dom, report, shot = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(dom, encoding="utf-8").read()
problems = []
for section in ("verdict", "tradeoff", "tasks", "faithfulness", "training", "settings"):
    if f'id="{section}"' not in text:
        problems.append(f"section #{section} is missing from the rendered page")
problems += expected_parts(text, os.path.join(os.path.dirname(report), "report.json"))
if "<script" in text.lower():
    problems.append("the rendered page holds a <script> element")
images = re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/svg\+xml;base64,([^"]+)"', text)
if len(images) < 4:
    problems.append(f"only {len(images)} plots were embedded (expected at least 4)")
for alt, data in images:
    try:
        root = ElementTree.fromstring(base64.b64decode(data))
        if not root.tag.endswith("svg") or len(root) == 0:
            problems.append(f"plot {alt!r} is an empty SVG")
    except Exception as e:  # any decoding or XML error means the browser draws a broken image
        problems.append(f"plot {alt!r} is not a valid SVG: {e}")
svgs = {alt: base64.b64decode(data).decode("utf-8", "replace") for alt, data in images}
if need_error_bars and not any("-err-" in svg for svg in svgs.values()):
    problems.append("report.json has intervals but no plot draws an error bar")
for level, variants in need_frontier.items():
    svg = svgs.get(f"capability-enumerability frontier, {level} level")
    if svg is None:
        problems.append(f"the frontier plot of the {level} level is missing")
        continue
    for variant in variants:
        if f'id="frontier-{re.sub(r"[^A-Za-z0-9_.-]", "_", variant)}"' not in svg:
            problems.append(f"the {level} frontier plot has no curve for {variant}")
if re.search(r'(src|href)="(https?:)?//', text):
    problems.append("the page refers to the network")
png = open(shot, "rb").read()
if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 10_000:
    problems.append(f"the screenshot {shot} is missing or blank ({len(png)} bytes)")
for p in problems:
    print(f"check_report_in_browser: {p}", file=sys.stderr)
print(f"check_report_in_browser: {report}: {len(images)} plots, "
      f"{'OK' if not problems else str(len(problems)) + ' problems'}; screenshot {shot}")
sys.exit(1 if problems else 0)
PY
exit $status
