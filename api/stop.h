/* stop.h: incremental stop-string matcher; holds back text that may start a stop. */
#ifndef LFM2_API_STOP_H
#define LFM2_API_STOP_H
#include <stddef.h>
#include <stdbool.h>

/* Feed generated text in pieces of any size (split anywhere, even inside a stop string); each
 * call returns the text that is now safe to show. Once a stop string is seen, the text before
 * it is returned, the stop and everything after it are dropped, and the matcher is done.
 * Text that ends with a proper prefix of some stop string is held back until it is decided. */
typedef struct stop_matcher {
    char **stops; /* copies of the stop strings (n_stops of them), owned */
    size_t *lens;
    int n_stops;
    size_t max_len; /* longest stop string */
    char *buf;      /* pending (held back) text, then the output of the last call */
    size_t len;     /* bytes in buf */
    size_t skip;    /* bytes at the start of buf already returned (dropped on the next call) */
    size_t cap;
    bool done;   /* a stop string matched (finish_reason "stop") */
    int matched; /* index of the stop string that matched, -1 before */
} stop_matcher;

/* Copies the n stop strings (n may be 0; empty strings are ignored). 0, or -1 when out of
 * memory (and sm is left empty). */
int stop_init(stop_matcher *sm, const char *const *stops, int n);
void stop_free(stop_matcher *sm); /* zeroes sm; a zeroed matcher is a no-op */

/* Appends len bytes of text. *out receives the safe text (valid until the next call on sm) and
 * the return value its length; -1 when out of memory. After a match (sm->done) it returns 0. */
long stop_feed(stop_matcher *sm, const char *text, size_t len, const char **out);
/* End of generation without a match: returns everything still held back. */
long stop_flush(stop_matcher *sm, const char **out);
/* Bytes currently held back (not yet shown). */
size_t stop_pending(const stop_matcher *sm);

#endif
