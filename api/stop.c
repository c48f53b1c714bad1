/* stop.c: stop-string matching across token boundaries with a hold-back buffer. */
#include "api/stop.h"
#include <stdlib.h>
#include <string.h>

int stop_init(stop_matcher *sm, const char *const *stops, int n) {
    memset(sm, 0, sizeof *sm);
    sm->matched = -1;
    if (n > 0) {
        sm->stops = calloc((size_t)n, sizeof *sm->stops);
        sm->lens = calloc((size_t)n, sizeof *sm->lens);
        if (!sm->stops || !sm->lens) goto fail;
    }
    for (int i = 0; i < n; i++) {
        size_t l = stops[i] ? strlen(stops[i]) : 0;
        if (!l) continue;
        sm->stops[sm->n_stops] = malloc(l + 1);
        if (!sm->stops[sm->n_stops]) goto fail;
        memcpy(sm->stops[sm->n_stops], stops[i], l + 1);
        sm->lens[sm->n_stops++] = l;
        if (l > sm->max_len) sm->max_len = l;
    }
    sm->cap = 2 * sm->max_len + 64;
    sm->buf = malloc(sm->cap);
    if (!sm->buf) goto fail;
    return 0;
fail:
    stop_free(sm);
    return -1;
}

void stop_free(stop_matcher *sm) {
    if (!sm) return;
    for (int i = 0; i < sm->n_stops; i++)
        free(sm->stops[i]);
    free(sm->stops);
    free(sm->lens);
    free(sm->buf);
    memset(sm, 0, sizeof *sm);
    sm->matched = -1;
}

size_t stop_pending(const stop_matcher *sm) {
    return sm->len - sm->skip;
}

/* Drops what the previous call returned and makes room for add more bytes. */
static int make_room(stop_matcher *sm, size_t add) {
    if (sm->skip) {
        memmove(sm->buf, sm->buf + sm->skip, sm->len - sm->skip);
        sm->len -= sm->skip;
        sm->skip = 0;
    }
    if (sm->len + add > sm->cap) {
        size_t nc = sm->cap ? sm->cap : 64;
        while (nc < sm->len + add)
            nc *= 2;
        char *nb = realloc(sm->buf, nc);
        if (!nb) return -1;
        sm->buf = nb;
        sm->cap = nc;
    }
    return 0;
}

long stop_feed(stop_matcher *sm, const char *text, size_t len, const char **out) {
    *out = NULL;
    if (sm->done) {
        sm->len = sm->skip = 0;
        return 0;
    }
    if (make_room(sm, len)) return -1;
    /* taken only now: make_room may move the buffer */
    *out = sm->buf;
    if (len) memcpy(sm->buf + sm->len, text, len); /* text may be NULL when len is 0 */
    sm->len += len;
    /* the stop string that is complete first (smallest end; on a tie the longest), so the
     * result does not depend on how the text was split: generation halts at that point */
    size_t best = sm->len, best_end = (size_t)-1;
    for (int s = 0; s < sm->n_stops; s++) {
        size_t l = sm->lens[s];
        for (size_t p = 0; p + l <= sm->len && p + l <= best_end; p++)
            if (!memcmp(sm->buf + p, sm->stops[s], l)) {
                if (p + l < best_end || p < best) {
                    best = p;
                    best_end = p + l;
                    sm->matched = s;
                }
                break;
            }
    }
    if (best < sm->len) {
        sm->done = true;
        sm->skip = sm->len; /* everything from the stop on is dropped */
        return (long)best;
    }
    /* hold back the longest tail that is a proper prefix of a stop string */
    size_t hold = 0;
    for (int s = 0; s < sm->n_stops; s++) {
        size_t l = sm->lens[s];
        for (size_t k = (l - 1 < sm->len ? l - 1 : sm->len); k > hold; k--)
            if (!memcmp(sm->buf + sm->len - k, sm->stops[s], k)) {
                hold = k;
                break;
            }
    }
    sm->skip = sm->len - hold;
    return (long)sm->skip;
}

long stop_flush(stop_matcher *sm, const char **out) {
    *out = NULL;
    if (sm->done) {
        sm->len = sm->skip = 0;
        return 0;
    }
    if (make_room(sm, 0)) return -1;
    *out = sm->buf; /* taken after make_room, which may move the buffer */
    sm->skip = sm->len;
    return (long)sm->len;
}
