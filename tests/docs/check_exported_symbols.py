#!/usr/bin/env python3
"""check_exported_symbols.py — the kjobs executable exports exactly the plugin API (ctest
lint.exported_symbols).

Usage: check_exported_symbols.py KJOBS_BINARY [HEADER]   (HEADER default: include/kjobs.h)

Plugins resolve the kjobs_* functions of include/kjobs.h from the executable at dlopen time
(ENABLE_EXPORTS), and nothing else: kjobs_core is compiled with hidden default visibility and
only the KJOBS_API declarations of kjobs.h are exported. This test runs
`nm -D --defined-only KJOBS_BINARY` and fails
  - for every defined dynamic symbol that is neither a function declared in the header nor in
    TOOLCHAIN below (an internal kj_* symbol leaking into the ABI a plugin could bind to), and
  - for every function declared in the header that is not exported (plugins using it would fail
    to load with "undefined symbol").
The header's functions are found by parsing it (comments removed, then `kjobs_name(`), so the
test follows the header. Exit 0 ok, 1 with the differences, 2 on a usage or nm error.
"""
import pathlib, re, subprocess, sys

# Defined dynamic symbols that the C runtime and the linker put in every dynamically linked
# glibc executable, whatever the sources' visibility. Names only (nm prints stdout@GLIBC_2.2.5).
TOOLCHAIN = {
    # crt1.o (Scrt1.o): the entry point, and the data_start/__data_start marker of the data
    # segment it defines (a weak and a global name for one address)
    "_start": "crt1.o entry point",
    "__data_start": "crt1.o: start of .data",
    "data_start": "crt1.o: weak alias of __data_start",
    # crt1.o: marks the binary as using glibc's new stdio ABI; glibc looks it up dynamically
    "_IO_stdin_used": "crt1.o: stdio ABI marker glibc looks up",
    # linker-defined section boundaries, exported by ld in every executable with a .dynsym
    "__bss_start": "ld: start of .bss",
    "_edata": "ld: end of initialised data",
    "_end": "ld: end of .bss",
    # crti.o: legacy init/fini entry points (present on some targets/toolchains)
    "_init": "crti.o: legacy .init entry",
    "_fini": "crti.o: legacy .fini entry",
    # glibc data the executable references directly: the compiler's non-PIC access in a PIE
    # makes ld copy them into the executable's .bss (a copy relocation) and export the copy,
    # so libc itself and every library use the single instance
    "stdout": "glibc stdio object, copy-relocated into the executable",
    "stderr": "glibc stdio object, copy-relocated into the executable",
    "stdin": "glibc stdio object, copy-relocated into the executable",
    # cli/malloc_conf.c: jemalloc's tuning, read by libjemalloc.so from the executable (only in
    # builds that link jemalloc, KJOBS_JEMALLOC)
    "malloc_conf": "jemalloc options of the KJOBS_JEMALLOC build",
}
# Sanitizer builds (KJOBS_SANITIZE) with clang: its ASan/UBSan runtimes are linked statically
# into the executable and export their interceptors and hooks (malloc, __asan_*, ... ~1900
# names) on purpose, so that they take precedence over libc's. (GCC links libasan.so/libubsan.so
# instead and exports nothing extra.) Those binaries are not shipped: there only kjobs' own
# namespaces (kj_*, kjobs_*) are checked for leaks, besides the header's functions.
SANITIZER_MARKERS = ("__asan_init", "__ubsan_handle_", "__sanitizer_")


def header_functions(header):
    text = header.read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return set(re.findall(r"\b(kjobs_[a-z0-9_]+)\s*\(", text))


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    binary = sys.argv[1]
    root = pathlib.Path(__file__).resolve().parents[2]
    header = pathlib.Path(sys.argv[2]) if len(sys.argv) == 3 else root / "include" / "kjobs.h"
    api = header_functions(header)
    if not api:
        print(f"no kjobs_*() declarations found in {header}", file=sys.stderr)
        return 2
    nm = subprocess.run(["nm", "-D", "--defined-only", binary], capture_output=True, text=True)
    if nm.returncode != 0:
        print(f"nm -D --defined-only {binary} failed:\n{nm.stderr}", file=sys.stderr)
        return 2
    exported = {}
    for line in nm.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            exported[fields[-1].split("@")[0]] = fields[-2]
    sanitized = any(name.startswith(SANITIZER_MARKERS) for name in exported)

    failures = []
    for name in sorted(api - exported.keys()):
        failures.append(f"not exported (plugins calling it fail to load): {name}")
    for name in sorted(api & exported.keys()):
        if exported[name] not in ("T", "W"):
            failures.append(f"exported as type {exported[name]}, not a function: {name}")
    for name in sorted(exported.keys() - api - TOOLCHAIN.keys()):
        if not sanitized or name.startswith(("kj_", "kjobs_")):
            failures.append(f"exported but not in {header.name}: {exported[name]} {name}")

    if failures:
        print(f"{binary}: {len(failures)} problem(s) with its dynamic symbols "
              f"({len(exported)} defined, {len(api)} functions in {header.name}):")
        for f in failures:
            print("  " + f)
        print("Only KJOBS_API declarations of include/kjobs.h may be exported; everything else is "
              "hidden (C_VISIBILITY_PRESET hidden on kjobs_core and kjobs).")
        return 1
    extra = sorted(exported.keys() - api)
    if sanitized:
        extra = [f"{len(extra)} C runtime and sanitizer runtime symbols"]
    print(f"{binary}: exports the {len(api)} functions of {header.name}"
          + (f" (+ toolchain: {' '.join(extra)})" if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
