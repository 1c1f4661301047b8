/*
 * job_json.c — record → JSON rendering for peek and dlq (see job_json.h).
 */
#include "processor/job_json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "common/utf8.h"
#include "schemas/codec.h"

void kj_json_set_bytes(json_t *obj, const char *field, const void *data, size_t len) {
    char name[64];
    if (kj_utf8_valid(data, len) && !memchr(data, 0, len))
        json_object_set_new(obj, field, json_stringn(data, len));
    snprintf(name, sizeof(name), "%s_b64", field);
    char *b64 = kj_base64_encode(data, len);
    json_object_set_new(obj, name, json_string(b64));
    free(b64);
}

json_t *kj_json_header_value(const void *val, size_t size) {
    if (!val) return json_null();
    if (kj_utf8_valid(val, size) && !memchr(val, 0, size)) return json_stringn(val, size);
    char *b64 = kj_base64_encode(val, size);
    json_t *j = json_pack("{s:s}", "base64", b64);
    free(b64);
    return j;
}

json_t *kj_job_json_from_message(const rd_kafka_message_t *msg) {
    json_t *o = json_object();
    json_object_set_new(
        o, "topic",
        kj_utf8_json_string(rd_kafka_topic_name(msg->rkt), strlen(rd_kafka_topic_name(msg->rkt))));
    json_object_set_new(o, "partition", json_integer(msg->partition));
    json_object_set_new(o, "offset", json_integer(msg->offset));
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
    if (ts >= 0) json_object_set_new(o, "timestamp", json_integer(ts));
    if (msg->key)
        kj_json_set_bytes(o, "key", msg->key, msg->key_len);
    else
        json_object_set_new(o, "key", json_null());

    json_t *headers = json_array();
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++)
            json_array_append_new(headers,
                                  json_pack("[o,o]", kj_utf8_json_string(name, strlen(name)),
                                            kj_json_header_value(val, size)));
    }
    json_object_set_new(o, "headers", headers);

    kj_job_record job;
    kj_encoding enc;
    uint32_t schema_id = 0;
    int rc;
    char err[256];
    if (!msg->payload) {
        json_object_set_new(o, "error", json_string("empty value (tombstone)"));
    } else if ((rc = kj_job_decode_ex(msg->payload, msg->len, &job, &enc, &schema_id, err,
                                      sizeof(err))) != 0) {
        if (rc == KJ_DECODE_CONFLUENT) {
            /* the CLI does not look schemas up: say so rather than blame the configuration */
            snprintf(err, sizeof(err),
                     "Confluent Schema Registry framing, schema id %" PRIu32
                     ": shown undecoded (kjobs peek and kjobs dlq do not consult the registry)",
                     schema_id);
            json_object_set_new(o, "schema_id", json_integer(schema_id));
        }
        json_object_set_new(o, "error", kj_utf8_json_string(err, strlen(err)));
        char *b64 = kj_base64_encode(msg->payload, msg->len);
        json_object_set_new(o, "value_b64", json_string(b64));
        free(b64);
    } else {
        json_object_set_new(
            o, "encoding",
            json_string(enc == KJ_ENCODING_SINGLE_OBJECT ? "single-object" : "binary"));
        json_object_set_new(o, "id", kj_utf8_json_string(job.id, strlen(job.id)));
        json_object_set_new(o, "type", kj_utf8_json_string(job.type, strlen(job.type)));
        json_object_set_new(o, "created_at", json_integer(job.created_at));
        kj_json_set_bytes(o, "payload", job.payload, job.payload_len);
        json_t *meta = json_object();
        for (size_t i = 0; i < job.meta_count; i++) {
            char *key = kj_utf8_clean_dup(job.meta[i].key, strlen(job.meta[i].key));
            json_object_set_new(meta, key ? key : "?",
                                kj_utf8_json_string(job.meta[i].value, strlen(job.meta[i].value)));
            free(key);
        }
        json_object_set_new(o, "meta", meta);
        kj_job_record_free(&job);
    }
    return o;
}
