/*
 * job_json.h — one Kafka record holding a job, rendered as a JSON object: where it is
 * (topic/partition/offset/timestamp), its key and headers, and the decoded job — or the decode
 * error and the raw value in base64. Shared by `kjobs peek` and `kjobs dlq`, so both print the
 * same shape.
 *
 * Everything here comes from producers and is untrusted: text fields that are not valid UTF-8
 * are shown with U+FFFD for the bad bytes (never dropped). "headers" is an ordered list of
 * [name, value] pairs, one per header as stored (Kafka allows repeated names; kcat -J style):
 * value is a string when it is valid UTF-8 without NUL, {"base64": "..."} otherwise, and null
 * for a header without a value.
 */
#ifndef KJOBS_JOB_JSON_H
#define KJOBS_JOB_JSON_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>

/** New JSON object for msg (never NULL). */
json_t *kj_job_json_from_message(const rd_kafka_message_t *msg);

/** A header value as "headers" shows it: string, {"base64": ...} or null. */
json_t *kj_json_header_value(const void *val, size_t size);

/** Set `field` to the bytes as text when valid UTF-8, and `field`_b64 always. */
void kj_json_set_bytes(json_t *obj, const char *field, const void *data, size_t len);

#endif /* KJOBS_JOB_JSON_H */
