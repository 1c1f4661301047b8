#!/bin/sh
# kcat_producer.sh — enqueue pre-encoded kjobs jobs with kcat.
#
# Usage: kcat_producer.sh BOOTSTRAP KEY FILE [KEY FILE]...
# Each FILE holds one Avro-encoded kjobs.Job (plain binary or single-object); it is sent as
# one record with KEY to the topic "jobs". kcat exits non-zero if the record was not delivered.
set -eu
bootstrap=$1
shift
while [ $# -ge 2 ]; do
  # librdkafka's default partitioner (consistent_random, CRC32) puts keys elsewhere than
  # Java and kjobs; murmur2_random is Java's murmur2
  kcat -P -b "$bootstrap" -t jobs -X partitioner=murmur2_random -k "$1" "$2"
  shift 2
done
