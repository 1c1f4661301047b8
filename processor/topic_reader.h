/*
 * processor/topic_reader.h — read partitions of Kafka topics up to a snapshot's end.
 *
 * Several parts of kjobs read a topic "as it is now" rather than follow it: the dead-letter
 * model (processor/dlq_model.h), the key-order scan of the ladder (processor/key_order.h), the
 * periodic schedule's state (processor/periodic.h). Each needs the same loop, with the same
 * pitfalls, so it is written once here (kcat's input.c plays this part for kcat):
 *   - each range is [start, end) of one partition; `end` is taken by the caller beforehand
 *     (a high watermark: the snapshot), so a busy topic cannot keep the read going forever;
 *   - a partition is done at its last record (offset end - 1) or at a partition EOF whose
 *     offset is >= end: with isolation.level=read_committed the last offsets of a partition may
 *     be transaction markers or aborted records that are never delivered, so "the record at
 *     end - 1 arrived" alone would wait for good (the consumer must have enable.partition.eof);
 *   - a record at or past `end` (the partition grew since the snapshot) is not handed over;
 *   - the read is bounded by a deadline and by a stop predicate (a signal, a shutdown).
 *
 * The reader owns no consumer: the caller creates one (assign-only use, no subscription) and
 * keeps it; kj_topic_read assigns the ranges and unassigns them before it returns.
 */
#ifndef KJ_PROCESSOR_TOPIC_READER_H
#define KJ_PROCESSOR_TOPIC_READER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** One partition to read: offsets [start, end). start < 0 or start >= end: nothing to read. */
typedef struct kj_read_range {
    const char *topic; /* borrowed for the call */
    int32_t partition;
    int64_t start; /* absolute offset (not a logical one) */
    int64_t end;   /* exclusive: normally the high watermark taken as the snapshot */
} kj_read_range;

/**
 * Called for each record of a range, in offset order within the partition (ranges interleave).
 * @p index is the record's range in the array given to kj_topic_read. Takes ownership of
 * @p msg (destroy it, or keep it). Return false to end the read (KJ_READ_ENDED_BY_CALLER).
 */
typedef bool(kj_read_record_fn)(rd_kafka_message_t *msg, size_t index, void *opaque);

/** Polled between records: true ends the read (KJ_READ_STOPPED). */
typedef bool(kj_read_stop_fn)(void *opaque);

typedef enum kj_read_result {
    KJ_READ_DONE = 0,        /* every range read to its end */
    KJ_READ_ENDED_BY_CALLER, /* the record function returned false */
    KJ_READ_STOPPED,         /* the stop predicate said so */
    KJ_READ_TIMEOUT,         /* the deadline passed first */
    KJ_READ_CONSUME_ERROR,   /* a consume error, with errors_fatal */
    KJ_READ_ASSIGN_ERROR,    /* the ranges could not be assigned */
} kj_read_result;

typedef struct kj_read_opts {
    int64_t deadline_ms;   /* kj_now_ms() clock; 0: none */
    kj_read_stop_fn *stop; /* NULL: none */
    void *stop_opaque;
    bool errors_fatal; /* a consume error ends the read; otherwise it is logged */
    bool eof_is_end;   /* any partition EOF ends its range, even below `end` (with
                        * read_committed the EOF comes at the last stable offset: an
                        * open transaction's records are then not waited for) */
    const char *what;  /* for log lines: "dead-letter topic", "ladder scan", ... */
} kj_read_opts;

/**
 * Reads @p ranges (n of them; n == 0 is a no-op) with the consumer @p rk, which must have
 * enable.partition.eof=true and hold no assignment the caller still needs (it is replaced,
 * and cleared on return). Records go to @p fn; @p done, if not NULL, is an array of n flags
 * set as each range is finished (read to its end, or empty). On KJ_READ_CONSUME_ERROR,
 * KJ_READ_TIMEOUT and KJ_READ_ASSIGN_ERROR a reason is written to @p err (NUL-terminated,
 * truncated to @p err_size). @locality any one thread per consumer; never blocks longer than
 * the deadline plus one 100 ms poll.
 */
kj_read_result kj_topic_read(rd_kafka_t *rk, const kj_read_range *ranges, size_t n,
                             kj_read_record_fn *fn, void *opaque, const kj_read_opts *opts,
                             bool *done, char *err, size_t err_size);

#endif /* KJ_PROCESSOR_TOPIC_READER_H */
