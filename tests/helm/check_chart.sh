#!/usr/bin/env bash
# check_chart.sh — entry point of the Helm chart checks for ctest: runs check_chart.py with
# Debian's /usr/bin/python3 (which has python3-yaml; a pyenv python3 on PATH may not).
#
# Usage: check_chart.sh render|openapi HELM
#        check_chart.sh check-config|probes HELM KJOBS_BINARY
set -euo pipefail
mode=${1:?usage: check_chart.sh render|openapi|check-config|probes HELM [KJOBS_BINARY]}
helm=${2:?helm binary path required}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
"$py" -c 'import yaml' 2>/dev/null || { echo "check_chart: $py lacks the yaml module (apt-get install python3-yaml)" >&2; exit 1; }
[ -x "$helm" ] || { echo "check_chart: helm not found at $helm (run scripts/install-deps.sh)" >&2; exit 1; }
case "$mode" in
  check-config|probes)
    kjobs=${3:?$mode needs the kjobs binary path}
    exec "$py" "$here/check_chart.py" "$mode" --helm "$helm" --kjobs "$kjobs" ;;
  render|openapi)
    exec "$py" "$here/check_chart.py" "$mode" --helm "$helm" ;;
  *) echo "check_chart: unknown mode $mode" >&2; exit 2 ;;
esac
