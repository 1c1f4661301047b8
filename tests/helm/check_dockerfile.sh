#!/usr/bin/env bash
# check_dockerfile.sh — checks the Dockerfile's runtime stage against a real kjobs build, without
# a container engine: every shared library `ldd KJOBS` resolves is mapped to its Debian package
# with `dpkg -S`; a package the binary links directly (ELF NEEDED) must be named on the runtime
# stage's `apt-get install` line, and a library pulled in indirectly must come from the
# dependency closure of those packages or from the base image (Essential / Priority: required).
# librdkafka is the exception: it is built from source (scripts/build-librdkafka.sh) and owned by
# no package; the build stage must run that script and put its librdkafka.so.1 under /out/, which
# the runtime stage copies in, and its own libraries are checked like any indirect one.
# Also asserts the runtime stage stays lean (no -dev, compiler or cmake), runs as a numeric
# non-root user, and keeps ENTRYPOINT ["kjobs"] / CMD ["run"].
#
# Usage: check_dockerfile.sh KJOBS_BINARY [DOCKERFILE]
set -euo pipefail

bin=${1:?usage: check_dockerfile.sh KJOBS_BINARY [DOCKERFILE]}
here=$(cd "$(dirname "$0")" && pwd)
dockerfile=${2:-$here/../../Dockerfile}
[ -x "$bin" ] || { echo "check_dockerfile: kjobs binary $bin not found or not executable (build it first)" >&2; exit 1; }
[ -f "$dockerfile" ] || { echo "check_dockerfile: $dockerfile not found" >&2; exit 1; }
command -v dpkg-query >/dev/null || { echo "check_dockerfile: needs dpkg (a Debian system)" >&2; exit 1; }

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# --- the Dockerfile's stages: runtime packages, build packages, and the runtime directives ------
parsed=$(/usr/bin/python3 - "$dockerfile" <<'PY'
import re, shlex, sys
text = open(sys.argv[1]).read()
text = re.sub(r"\\\n", " ", text)                       # join continuation lines
stages, cur = [], None
for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    m = re.match(r"(?i)FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line)
    if m:
        cur = {"from": m.group(1), "name": (m.group(2) or "").lower(), "lines": []}
        stages.append(cur)
    elif cur is not None:
        cur["lines"].append(line)
def packages(stage):
    pkgs = []
    for line in stage["lines"]:
        if not re.match(r"(?i)RUN\s", line):
            continue
        for cmd in re.split(r"&&|;|\|\|", line[4:]):
            words = shlex.split(cmd)
            words = [w for w in words if "=" not in w or w.startswith("-")]   # drop VAR=value
            if "apt-get" in words and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs
runtime = next((s for s in stages if s["name"] == "runtime"), stages[-1] if stages else None)
build = next((s for s in stages if s["name"] == "build"), None)
if runtime is None or build is None:
    sys.exit("Dockerfile needs a `build` and a `runtime` stage")
print("RUNTIME_FROM", runtime["from"])
print("RUNTIME_PKGS", " ".join(packages(runtime)))
print("BUILD_PKGS", " ".join(packages(build)))
build_runs = " ".join(l for l in build["lines"] if re.match(r"(?i)RUN\s", l))
print("BUILD_RDKAFKA", int("scripts/build-librdkafka.sh" in build_runs
                           and re.search(r"librdkafka\.so\.1\"?\s+/out/", build_runs) is not None))
print("RUNTIME_COPIES_OUT", int(any(re.match(r"(?i)COPY\s+--from=build\s+/out/\s+/\s*$", l)
                                    for l in runtime["lines"])))
for line in runtime["lines"]:
    for d in ("USER", "ENTRYPOINT", "CMD"):
        if re.match(rf"(?i){d}\s", line):
            print(d, line.split(None, 1)[1])
PY
) || { echo "check_dockerfile: cannot parse $dockerfile" >&2; exit 1; }
field() { sed -n "s/^$1 //p" <<<"$parsed" | tail -n1; }
runtime_pkgs=$(field RUNTIME_PKGS)
build_pkgs=$(field BUILD_PKGS)
echo "runtime stage ($(field RUNTIME_FROM)) installs: $runtime_pkgs"
[ -n "$runtime_pkgs" ] || fail "runtime stage installs no packages"

case "$(field RUNTIME_FROM)" in debian:*bookworm*|debian:\$\{DEBIAN_RELEASE\}*) ;; *) fail "runtime stage is not debian bookworm: $(field RUNTIME_FROM)";; esac
[ "$(field ENTRYPOINT)" = '["kjobs"]' ] || fail "runtime ENTRYPOINT is '$(field ENTRYPOINT)', want [\"kjobs\"]"
[ "$(field CMD)" = '["run"]' ] || fail "runtime CMD is '$(field CMD)', want [\"run\"]"
user=$(field USER)
[[ "$user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "runtime USER '$user' is not a numeric non-root uid (runAsNonRoot needs one)"
for p in $runtime_pkgs; do
  case "$p" in *-dev|build-essential|cmake|gcc|clang|make|pkg-config) fail "runtime stage installs build tool $p";; esac
done
for p in cmake pkg-config; do
  grep -qw -- "$p" <<<"$build_pkgs" || fail "build stage does not install $p"
done

# --- packages: explicit list, its dependency closure, and the base image -----------------------
declare -A explicit=() closure=() base=()
for p in $runtime_pkgs; do explicit[$p]=1; done
# close_over ARRAY_NAME PKG...: add the packages and everything they (pre-)depend on.
close_over() {
  local -n set=$1; shift
  local queue=("$@") p d deps
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}; queue=("${queue[@]:1}")
    [ -n "${set[$p]:-}" ] && continue
    set[$p]=1
    deps=$(dpkg-query -W -f='${Pre-Depends}, ${Depends}' "$p" 2>/dev/null) || continue
    # "a (>= 1) | b, c:any" → every alternative counts (apt picks one; we accept any).
    for d in $(tr ',|' '\n\n' <<<"$deps" | sed 's/([^)]*)//g; s/:any//; s/^ *//; s/ *$//' | grep -v '^$'); do
      [ -z "${set[$d]:-}" ] && queue+=("$d")
    done
  done
  return 0
}
close_over closure $runtime_pkgs
# debian:*-slim carries the Essential and Priority: required packages, and what they depend on
# (libc6 is only "optional" itself, but every essential binary needs it).
close_over base $(dpkg-query -W -f='${Package} ${Essential} ${Priority}\n' | awk '$2 == "yes" || $3 == "required" {print $1}')
in_base() { [ -n "${base[$1]:-}" ]; }
pkg_of() {    # Debian package owning a library path (tries the usrmerge spellings)
  local path=$1 real cand
  real=$(readlink -f "$path")
  for cand in "$path" "/usr$path" "${path#/usr}" "$(readlink -f "$(dirname "$path")")/$(basename "$path")" "$real"; do
    [ -n "$cand" ] || continue
    out=$(dpkg -S "$cand" 2>/dev/null | grep -v '^diversion' | head -n1) || continue
    [ -n "$out" ] && { echo "${out%%:*}" | sed 's/:.*//' ; return 0; }
  done
  return 1
}

needed=$(objdump -p "$bin" 2>/dev/null | awk '$1 == "NEEDED" {print $2}') || true
[ -n "$needed" ] || fail "objdump found no NEEDED entries in $bin (is it dynamically linked?)"
direct_count=0
declare -A lib_pkg=()   # soname → package, reused below
while read -r soname arrow path _; do
  [ "$arrow" = "=>" ] || continue
  [ "$path" = "not" ] && { fail "ldd: $soname not found"; continue; }
  if [[ "$soname" == librdkafka.so.* && "$(readlink -f "$path")" == */librdkafka-*/lib/* ]]; then
    direct_count=$((direct_count + 1))
    if [ "$(field BUILD_RDKAFKA)" = 1 ] && [ "$(field RUNTIME_COPIES_OUT)" = 1 ]; then
      echo "ok   direct   $soname -> built by scripts/build-librdkafka.sh, copied in via /out/"
    else
      fail "$soname comes from scripts/build-librdkafka.sh, but the build stage does not run it and install $soname under /out/, or the runtime stage does not COPY --from=build /out/ /"
    fi
    continue
  fi
  pkg=$(pkg_of "$path") || { fail "$soname ($path) belongs to no Debian package"; continue; }
  pkg=${pkg%%:*}
  lib_pkg[$soname]=$pkg
  if grep -qx -- "$soname" <<<"$needed"; then
    direct_count=$((direct_count + 1))
    if [ -n "${explicit[$pkg]:-}" ]; then
      echo "ok   direct   $soname -> $pkg (installed explicitly)"
    elif in_base "$pkg"; then
      echo "ok   direct   $soname -> $pkg (in the base image)"
    else
      fail "$soname is linked directly but its package $pkg is not on the runtime apt-get install line"
    fi
  else
    if [ -n "${closure[$pkg]:-}" ] || in_base "$pkg"; then
      echo "ok   indirect $soname -> $pkg"
    else
      fail "$soname ($pkg) is needed indirectly but neither a dependency of the runtime packages nor in the base image"
    fi
  fi
done < <(ldd "$bin")
[ "$direct_count" -gt 0 ] || fail "no directly linked library was checked"

# Every explicit runtime package should be needed by something (catch stale entries).
for p in $runtime_pkgs; do
  [ "$p" = ca-certificates ] && continue   # data, not a library: TLS to brokers
  used=0
  for so in "${!lib_pkg[@]}"; do [ "${lib_pkg[$so]}" = "$p" ] && used=1; done
  [ $used = 1 ] || echo "note: runtime package $p provides no library this binary links (kept if a later build needs it)"
done

if [ $failures -gt 0 ]; then
  echo "check_dockerfile: $failures problem(s)" >&2
  exit 1
fi
echo "check_dockerfile: runtime stage provides every library of $bin"
