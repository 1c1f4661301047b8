/*
 * utf8.h — the one UTF-8 validator of kjobs, and the one way text of unknown origin (handler
 * errors, child output, headers, label values) becomes valid UTF-8 of bounded size.
 *
 * Validity is RFC 3629: no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
 * U+10FFFF. kj_utf8_clean replaces each byte that does not start a valid sequence (and NUL,
 * since jansson's and C's strings end there) with a replacement the caller chooses (U+FFFD by
 * default), so a JSON layer that rejects invalid UTF-8 never drops the text; text longer than
 * the destination is cut on a character boundary and, when asked, ends with the ellipsis
 * marker KJ_UTF8_ELLIPSIS ("…", U+2026, 3 bytes), the whole still fitting the destination.
 *
 * @locality any thread (no state)
 */
#ifndef KJOBS_UTF8_H
#define KJOBS_UTF8_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/** U+FFFD REPLACEMENT CHARACTER, what an invalid byte becomes by default. */
#define KJ_UTF8_REPLACEMENT "\xEF\xBF\xBD"
/** U+2026 HORIZONTAL ELLIPSIS, the marker of text cut to fit. */
#define KJ_UTF8_ELLIPSIS "\xE2\x80\xA6"

/** Length (1..4) of the valid UTF-8 sequence at s (n bytes available), or 0 if invalid there. */
size_t kj_utf8_seq_len(const void *s, size_t n);
/** Length of the run of ASCII bytes other than NUL (0x01..0x7F) at the start of s (n bytes),
 *  counted eight bytes at a time (a word with no high bit and no zero byte: the "haszero"
 *  test of Sean Anderson's Bit Twiddling Hacks); may stop up to 7 bytes before the run ends,
 *  so callers go on byte by byte from where it stops. The fast path of the validators (job
 *  types, ids and header values are ASCII) and of kj_utf8_clean. */
size_t kj_utf8_ascii_run(const void *s, size_t n);

/** Whether all len bytes are valid UTF-8 (NUL bytes count as valid here). */
bool kj_utf8_valid(const void *data, size_t len);

/**
 * Copy len bytes of src into dst (dst_size >= 1 bytes, always NUL-terminated) as valid UTF-8:
 * each invalid byte and each NUL becomes `replacement` (NULL: KJ_UTF8_REPLACEMENT; must itself
 * be valid UTF-8). When the result does not fit in dst_size - 1 bytes it is cut after the last
 * whole character that fits together with the ellipsis marker (when `ellipsis`) and the marker
 * is appended. Returns the length written (excluding the NUL).
 */
size_t kj_utf8_clean(char *dst, size_t dst_size, const void *src, size_t len,
                     const char *replacement, bool ellipsis);

/** kj_utf8_clean into a malloc'd string with no size bound (never NULL unless out of memory). */
char *kj_utf8_clean_dup(const void *src, size_t len);

/**
 * A JSON string of the bytes: as they are when valid UTF-8 without NUL, else kj_utf8_clean'd
 * (U+FFFD for each bad byte), so a field built from untrusted text is never dropped. NULL s
 * gives JSON null.
 */
json_t *kj_utf8_json_string(const void *s, size_t len);

#endif /* KJOBS_UTF8_H */
