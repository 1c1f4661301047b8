#!/usr/bin/python3
"""readme_params.py — prints the parameter tables of helm/kjobs/README.md from the `## @section`
and `## @param` lines of helm/kjobs/values.yaml (defaults read from the values themselves).
Regenerate after editing values.yaml:
  sed -n '1,/^## Parameters$/p' helm/kjobs/README.md > /tmp/r && tests/helm/readme_params.py >> /tmp/r \
    && mv /tmp/r helm/kjobs/README.md
check_chart.py (render mode) fails when README.md's tables differ from this output."""
import os
import re
import sys

import yaml

VALUES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "helm", "kjobs", "values.yaml")


def tables(values_path=VALUES):
    text = open(values_path).read()
    vals = yaml.safe_load(text)

    def get(path):
        node = vals
        for part in path.split("."):
            node = node[part]
        return node

    out = []
    for line in text.splitlines():
        m = re.match(r"^## @section (.*)", line)
        if m:
            out.append(f"\n### {m.group(1)}\n\n| Name | Description | Default |\n| --- | --- | --- |")
            continue
        m = re.match(r"^\s*## @param (\S+) (.*)", line)
        if m:
            d = get(m.group(1))
            if isinstance(d, (dict, list)):
                dv = "`" + yaml.safe_dump(d, default_flow_style=True, width=1000).strip() + "`"
            elif isinstance(d, bool):
                dv = f"`{str(d).lower()}`"
            elif d == "":
                dv = '`""`'
            else:
                dv = f"`{d}`"
            desc = m.group(2).replace("|", "\\|")
            out.append(f"| `{m.group(1)}` | {desc} | {dv} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(tables())
