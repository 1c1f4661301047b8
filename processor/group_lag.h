/*
 * group_lag.h — how far a consumer group is behind on the main topic and each retry-ladder
 * topic, per partition: the group's committed offset, the log start and end, and the lag.
 * One reading shared by `kjobs lag` (cli/cmd_lag.c) and the console's overview and
 * retries pages (processor/console_data.c), so the two never disagree.
 *
 * It never disturbs the group it inspects: the handle it is given carries the group's group.id
 * only so that rd_kafka_committed() can ask the coordinator (OffsetFetch); it never subscribes,
 * assigns or commits, so it never joins the group and a running worker sees no rebalance.
 * A partition without a committed offset counts its whole retained log (end - start) as lag:
 * a worker starts at the log start there.
 *
 * @locality one thread at a time per handle
 */
#ifndef KJOBS_GROUP_LAG_H
#define KJOBS_GROUP_LAG_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "processor/config.h"
#include "processor/topic_layout.h"

typedef struct kj_lag_row {
    char *topic; /* owned by the rows (kj_group_lag_free) */
    kj_topic_role role;
    int step; /* ladder step 1..N, else 0 */
    int32_t partition;
    int64_t committed; /* < 0: none */
    int64_t log_start, log_end;
    int64_t lag;
} kj_lag_row;

/**
 * Read the lag of cfg->group on cfg's main and ladder topics with `rk` (a consumer whose
 * group.id is that group, enable.auto.commit off). Each broker request waits at most
 * timeout_ms. Every failure is logged where it happens. Returns 0 when every partition was
 * read; 1 when some were not (the rows hold the others); -1 when nothing could be read (the
 * cluster unreachable, the committed offsets refused): *rows is then NULL and *count 0.
 * Free *rows with kj_group_lag_free.
 */
int kj_group_lag_read(rd_kafka_t *rk, const kj_config *cfg, int timeout_ms, kj_lag_row **rows,
                      size_t *count);
void kj_group_lag_free(kj_lag_row *rows, size_t count);

/**
 * Sets on `conf` what a handle for kj_group_lag_read needs: group.id = `group` (for
 * OffsetFetch only: the handle never subscribes, assigns or commits, so it never becomes a
 * member), no auto commit, and isolation.level = read_uncommitted — which only makes
 * OffsetFetch skip "require stable": the last committed offsets are answered at once even
 * while an exactly-once worker's transaction holds newer ones pending (after a kill -9 that is
 * until the broker aborts it, transaction.timeout.ms), instead of retrying until the timeout.
 * Returns 0, or -1 with the reason in err.
 */
int kj_group_lag_conf_set(rd_kafka_conf_t *conf, const char *group, char *err, size_t errsz);

#endif /* KJOBS_GROUP_LAG_H */
