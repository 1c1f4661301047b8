#!/bin/sh
# enqueue.sh — enqueue kjobs jobs from a shell with `kjobs enqueue` (no Avro code at all).
#
# Usage: enqueue.sh BOOTSTRAP KEY...
# Sends one email.send job per KEY to the topic "jobs" in single-object encoding; kjobs
# places keys with Java's murmur2 itself. Prints each acknowledged job's id; exits non-zero
# if one was not acknowledged.
set -eu
bootstrap=$1
shift
for key in "$@"; do
  kjobs enqueue -b "$bootstrap" --encoding single-object --type email.send --key "$key" \
    --payload "welcome $key" --meta producer=kjobs-enqueue
done
