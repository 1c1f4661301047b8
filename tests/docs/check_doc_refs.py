#!/usr/bin/env python3
"""check_doc_refs.py — the code references of a design doc still resolve (ctest lint.doc_refs).

For each Markdown file given (default: docs/architecture.md), every `backticked` repository path
(processor/..., partitions/..., docs/..., ...) must exist, and every `backticked` C identifier with
an underscore (kj_worker_run, handle_message, KJ_COMMIT_INTERVAL_MS; `f(args)` counts as f) must
occur as a word in the sources (processor/, partitions/, include/, schemas/). A rename in the code
then fails here instead of leaving the doc pointing at nothing. Exit 0 ok, 1 with the misses.
"""
import pathlib, re, sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIRS = ("processor/", "partitions/", "include/", "schemas/", "cli/", "common/", "docs/", "tests/", "scripts/",
        "bench/", "examples/", "helm/")
SOURCES = " ".join(p.read_text(errors="replace") for d in ("processor", "partitions", "include", "cli", "common",
                   "schemas") for p in (ROOT / d).rglob("*.[ch]"))
WORDS = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", SOURCES))

misses = []
for doc in sys.argv[1:] or ["docs/architecture.md"]:
    for tok in re.findall(r"`([^`\n]+)`", (ROOT / doc).read_text()):
        if tok.startswith(DIRS) and " " not in tok:
            path = tok.split(":")[0].rstrip("/")
            if "*" in path:
                if not list(ROOT.glob(path)): misses.append(f"{doc}: no file matches `{tok}`")
            elif not (ROOT / path).exists():
                misses.append(f"{doc}: no such path `{tok}`")
            continue
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(\(.*\))?", tok)
        if m and "_" in m.group(1) and m.group(1) not in WORDS:
            misses.append(f"{doc}: `{tok}` names nothing in the sources")
print("\n".join(misses) or "ok")
sys.exit(1 if misses else 0)
