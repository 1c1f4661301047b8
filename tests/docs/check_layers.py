#!/usr/bin/env python3
"""check_layers.py — the source folders depend on each other in one direction only
(ctest lint.layers).

    cli/  ->  processor/  ->  partitions/, schemas/  ->  common/

cli/ (the `kjobs` commands) uses the runtime as a library; nothing in processor/, partitions/
or schemas/ includes a cli/ header, so the runtime never calls back into a command.
partitions/ (the partition engine) and schemas/ (the codec) use no Kafka and no processor/
header; common/ (buffer, UTF-8, base64, hash, clock) includes nothing of kjobs. A quoted
#include that breaks a rule is listed with file and line; exit 0 ok, 1 with the misses. The
worker's private header (processor/worker_internal.h) is included by the worker's files only.
"""
import pathlib, re, sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
# folder -> quoted-include prefixes and system headers it must not use
RULES = {
    "processor": (("cli/",), ()),
    "schemas": (("cli/", "processor/", "partitions/"), ("librdkafka/",)),
    "common": (("cli/", "processor/", "partitions/", "schemas/"), ("librdkafka/",)),
    "partitions": (("cli/", "processor/", "schemas/"), ("librdkafka/",)),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')

misses = []
for folder, (quoted, system) in RULES.items():
    for path in sorted((ROOT / folder).rglob("*.[ch]")):
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            kind, name = m.groups()
            banned = quoted if kind == '"' else system
            if any(name.startswith(b) for b in banned):
                misses.append(f"{path.relative_to(ROOT)}:{n}: {folder}/ must not include {name}")
# the worker's private header: only the files of the worker include it (worker_internal.h)
WORKER_FILES = {"worker.c", "worker_partitions.c", "worker_commits.c", "worker_rebalance.c",
                "job_pipeline.c"}
for path in sorted(ROOT.glob("*/**/*.[ch]")):
    rel = path.relative_to(ROOT)
    if rel.parts[0] in (".deps", "build") or rel.parts[0].startswith("build"):
        continue
    if path.name in WORKER_FILES and rel.parts[0] == "processor":
        continue
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        m = INCLUDE.match(line)
        if m and m.group(2) == "processor/worker_internal.h" and path.name != "worker_internal.h":
            misses.append(f"{rel}:{n}: only the worker's own files include processor/worker_internal.h")
for miss in misses:
    print(miss)
sys.exit(1 if misses else 0)
