/*
 * processor/dlq_marker.h — the replay marker of a dead-letter topic: what a replay records so
 * that a plain replay never replays a dead letter twice, its wire form, and the rule by which
 * it moves. Pure (no Kafka, no I/O) so the format and the rule are table-tested on their own
 * (tests/unit/test_dlq_marker.c); processor/dlq_model.c reads and commits it.
 *
 * What it is. The consumer group `<kafka.group>.dlq-replay` (only committed to, never joined)
 * holds, per DLQ partition, a committed offset W — "every dead letter below W is replayed, or
 * was never replayable without --again" — and, in that commit's metadata, the offsets >= W
 * replayed so far, as inclusive ranges:
 *
 *     kjobs-replayed:v1:12-40,45
 *
 * KJ_DLQ_MARKER_PREFIX, then ranges "N" or "LO-HI" separated by commas (written ascending,
 * merged and all >= W; the prefix alone is the empty list). Metadata that does not parse is not
 * ours: the caller ignores it whole. Kafka refuses metadata above offset.metadata.max.bytes
 * (4096 by default): KJ_DLQ_MARKER_MAX_BYTES is where the caller starts warning.
 *
 * How it moves (kj_dlq_marker_next, after a replay, per partition): W goes to the snapshot's
 * end offset, held back to the first offset that is still "new" after this replay — read but
 * not selected (filtered out), or selected but not acknowledged — and to where the read stopped
 * when it did not reach the end; it never moves back. The ranges are the old ones plus the
 * acknowledged offsets, cut at the new W. A partition is committed only when that changes
 * something (kj_dlq_marker_changed), so a replay that touched nothing commits nothing.
 *
 * Shapes: offsets are Kafka offsets (>= 0); a kj_dlq_ranges zero-initialised is empty and owns
 * its array (kj_dlq_ranges_free). Allocation failure is not checked (it never was in the
 * DLQ command this came from).
 *
 * @locality any thread (no state); a kj_dlq_ranges is not shared.
 */
#ifndef KJOBS_DLQ_MARKER_H
#define KJOBS_DLQ_MARKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The metadata's version prefix; the metadata is this, then the ranges. */
#define KJ_DLQ_MARKER_PREFIX "kjobs-replayed:v1:"
/** Metadata longer than this is committed with a warning (Kafka's default limit is 4096). */
#define KJ_DLQ_MARKER_MAX_BYTES 4000

/** Offsets lo..hi, both included. */
typedef struct kj_dlq_range {
    int64_t lo, hi;
} kj_dlq_range;

/** A set of offsets as ranges; {0} is empty. Normalised: ascending, merged, none overlapping. */
typedef struct kj_dlq_ranges {
    kj_dlq_range *v;
    size_t n, cap;
} kj_dlq_ranges;

/** Adds `offset` as a range of its own unless a range already holds it (normalise after). */
void kj_dlq_ranges_add(kj_dlq_ranges *s, int64_t offset);
/** Whether a range holds `offset`. */
bool kj_dlq_ranges_has(const kj_dlq_ranges *s, int64_t offset);
/** Sorts, drops the offsets below `floor`, merges overlapping and adjacent ranges. */
void kj_dlq_ranges_normalize(kj_dlq_ranges *s, int64_t floor);
/** Frees the array; `s` is empty again. */
void kj_dlq_ranges_free(kj_dlq_ranges *s);

/** The metadata text for `s` as it is (normalise first): a new string the caller frees. */
char *kj_dlq_marker_format(const kj_dlq_ranges *s);
/**
 * Appends the ranges of metadata `text` to `s` (as written: not normalised). Returns 0 (also
 * for the empty list; a trailing comma is tolerated), -1 when `text` is not a marker or is
 * malformed (a range below 0 or reversed, a stray character); `s` may then hold part of it.
 */
int kj_dlq_marker_parse(const char *text, kj_dlq_ranges *s);

/** One partition after a replay read it: what the next marker depends on. */
typedef struct kj_dlq_marker_step {
    int64_t committed;          /* W as read before the replay; -1: none */
    const kj_dlq_ranges *marks; /* the ranges read with it (may be empty) */
    int64_t end;                /* the snapshot's end offset of the partition */
    bool read_to_end;           /* the read reached `end` */
    int64_t next_expected;      /* else: one past the last offset it read */
    int64_t first_new;          /* first offset still "new" after the replay; -1: none */
    const kj_dlq_ranges *acked; /* offsets whose copies the broker acknowledged */
} kj_dlq_marker_step;

/** W to commit for `st`; `out` (empty on entry) gets the ranges >= W, normalised. */
int64_t kj_dlq_marker_next(const kj_dlq_marker_step *st, kj_dlq_ranges *out);

/**
 * Whether committing (w, text) changes the marker read as (committed, text_read), text_read
 * NULL when there was no commit: a new text, or a new W — except that no marker and a W at or
 * below the partition's `low` offset (nothing is below it) are the same.
 */
bool kj_dlq_marker_changed(int64_t committed, const char *text_read, int64_t low, int64_t w,
                           const char *text);

/** One marker as read: W (-1: none) and its ranges (NULL: none). */
typedef struct kj_dlq_marker_view {
    int64_t committed;
    const kj_dlq_ranges *marks;
} kj_dlq_marker_view;

/**
 * How many offsets of [low, end) no marker of `markers` (`count` of them) settles: an offset is
 * settled by a marker when it is below its W or in its ranges. 0 when end <= low. Used for the
 * DLQ's "unresolved" depth (neither replayed nor discarded) without reading a record.
 */
int64_t kj_dlq_marker_unsettled(int64_t low, int64_t end, const kj_dlq_marker_view *markers,
                                size_t count);

#endif /* KJOBS_DLQ_MARKER_H */
