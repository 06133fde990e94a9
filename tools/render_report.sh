#!/usr/bin/env bash
# Renders a skipgate report page with headless Chromium, checks that every <figure> of the page
# has an <svg> in the rendered DOM, and writes a full-page screenshot.
#
#   tools/render_report.sh REPORT.html [OUT.png]
#
# OUT.png defaults to target/report-screenshots/<directory of the page>.png (screenshots are
# never committed: *.png is git-ignored). Needs Debian's `chromium` package (override the binary
# with CHROMIUM=...). Exits non-zero if the page does not render or a figure has no SVG.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 REPORT.html [OUT.png]" >&2
    exit 2
fi
chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $chromium ]]; then
    echo "error: $chromium not found (apt-get install -y chromium)" >&2
    exit 2
fi
page=$(realpath "$1")
if [[ ! -f $page ]]; then
    echo "error: $1 is not a file" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/target/report-screenshots/$(basename "$(dirname "$page")").png}
mkdir -p "$(dirname "$out")"
out=$(realpath "$out")

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --hide-scrollbars --user-data-dir="$profile")

# Every <figure> of the source must come out of the renderer with an <svg> inside it.
want=$(grep -o '<figure' "$page" | wc -l)
dom=$("$chromium" "${flags[@]}" --dump-dom "file://$page" 2>/dev/null)
read -r figures with_svg < <(printf '%s' "$dom" | perl -0777 -ne '
    my ($n, $s) = (0, 0);
    while (/<figure\b(.*?)<\/figure>/gs) { $n++; $s++ if $1 =~ /<svg\b/; }
    print "$n $s\n";')
echo "figures in the page: $want; rendered: $figures, with an SVG: $with_svg"
if [[ $want -eq 0 || $figures -ne $want || $with_svg -ne $want ]]; then
    echo "error: not every figure rendered with its SVG" >&2
    exit 1
fi

# A window tall enough for the whole page: about 560 px per figure plus the text and tables.
height=${HEIGHT:-$((900 + 560 * want))}
"$chromium" "${flags[@]}" --window-size=800,"$height" --screenshot="$out" "file://$page" 2>/dev/null
if [[ ! -s $out ]]; then
    echo "error: no screenshot written to $out" >&2
    exit 1
fi
echo "screenshot: $out"
