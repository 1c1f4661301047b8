#!/bin/bash
# rss_sampler.sh — a BENCH_WORKER_PREFIX that records the worker's memory over its whole run:
# every 100 ms one line "<epoch s> <VmRSS kB> <RssAnon kB> <RssFile kB> <threads>" into
# $RSS_LOG (default /tmp/rss.log), then execs the worker (same pid, so bench.py's VmHWM read
# still names it). VmHWM says how high; this says when, and whether it is the heap (RssAnon)
# or the mapped libraries (RssFile). Usage (bench/RESULTS.md, "The router's copies"):
#   RSS_LOG=/tmp/rss.log BENCH_WORKER_PREFIX=bench/rss_sampler.sh bench/bench.py ...
pid=$$
(
    while [ -e /proc/$pid ]; do
        r=$(awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} /^RssFile/{f=$2} /^Threads/{t=$2}
                 END{print r, a, f, t}' /proc/$pid/status 2>/dev/null)
        [ -n "$r" ] && echo "$(date +%s.%N) $r"
        sleep 0.1
    done
) > "${RSS_LOG:-/tmp/rss.log}" 2>/dev/null &
exec "$@"
