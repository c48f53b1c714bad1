/* fuzz_stop.c: libFuzzer harness: the stop matcher against a naive whole-text reference. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/stop.h"
#include "tests/fuzz/fuzz.h"

/* Input: [n] then n stops as [len][bytes] (a NUL ends a stop early, as strlen would), then
 * [seed] that decides how the rest, the generated text, is split into feeds. */

#define MAX_STOPS 6
#define MAX_STOP_LEN 16

typedef struct ref_stops {
    char s[MAX_STOPS][MAX_STOP_LEN + 1];
    size_t len[MAX_STOPS];
    int n;
} ref_stops;

/* The stop that completes first in text (smallest end; on a tie the longest): its start, and
 * its index in *which; len when none matches. */
static size_t ref_match(const ref_stops *r, const char *text, size_t len, int *which) {
    for (size_t end = 1; end <= len; end++) {
        size_t best_len = 0;
        int best = -1;
        for (int i = 0; i < r->n; i++) {
            size_t l = r->len[i];
            if (!l || l > end || l <= best_len) continue;
            if (!memcmp(text + end - l, r->s[i], l)) best = i, best_len = l;
        }
        if (best >= 0) {
            *which = best;
            return end - best_len;
        }
    }
    *which = -1;
    return len;
}

/* Longest tail of text that is a proper prefix of some stop string. */
static size_t ref_hold(const ref_stops *r, const char *text, size_t len) {
    size_t hold = 0;
    for (int i = 0; i < r->n; i++)
        for (size_t k = 1; k < r->len[i] && k <= len; k++)
            if (k > hold && !memcmp(text + len - k, r->s[i], k)) hold = k;
    return hold;
}

static uint32_t next(uint32_t *s) {
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t pos = 0;
    ref_stops r;
    memset(&r, 0, sizeof r);
    if (size < 2) return 0;
    int n = data[pos++] % (MAX_STOPS + 1);
    const char *ptrs[MAX_STOPS];
    for (int i = 0; i < n && pos < size; i++) {
        size_t l = data[pos++] % (MAX_STOP_LEN + 1);
        if (l > size - pos) l = size - pos;
        memcpy(r.s[i], data + pos, l);
        r.s[i][l] = 0;
        r.len[i] = strlen(r.s[i]);
        ptrs[i] = r.s[i];
        pos += l;
        r.n = i + 1;
    }
    uint32_t seed = pos < size ? data[pos++] * 2654435761u + 1 : 1;
    const char *text = (const char *)data + pos;
    size_t tlen = size - pos;

    stop_matcher sm;
    FUZZ_CHECK(stop_init(&sm, ptrs, r.n) == 0);
    char *shown = malloc(tlen + 1); /* everything returned so far */
    FUZZ_CHECK(shown != NULL);
    size_t n_shown = 0, fed = 0;
    int which;
    size_t cut = ref_match(&r, text, tlen, &which);
    bool done = false;
    while (fed < tlen || (next(&seed) & 7) == 0) {
        size_t k = next(&seed) % 8;
        if ((next(&seed) & 15) == 0) k = next(&seed) % 64;
        /* pieces longer than the matcher's first buffer (2 * longest stop + 64), as a real
         * vocab's long tokens are: the buffer moves while stop_feed runs */
        if ((next(&seed) & 31) == 0) k = 64 + next(&seed) % 256;
        if (k > tlen - fed) k = tlen - fed;
        const char *out = NULL;
        long got = stop_feed(&sm, text + fed, k, &out);
        fed += k;
        FUZZ_CHECK(got >= 0);
        if (done) {
            FUZZ_CHECK(got == 0);
            if (fed >= tlen) break;
            continue;
        }
        FUZZ_CHECK(n_shown + (size_t)got <= fed);
        if (got) memcpy(shown + n_shown, out, (size_t)got);
        n_shown += (size_t)got;
        /* shown text is always a prefix of the input, never beyond the reference cut */
        FUZZ_CHECK(!memcmp(shown, text, n_shown));
        FUZZ_CHECK(n_shown <= cut);
        int w;
        size_t c = ref_match(&r, text, fed, &w);
        if (c < fed) {
            /* a stop completed inside what was fed: the matcher must have seen it now */
            FUZZ_CHECK(sm.done);
            FUZZ_CHECK(n_shown == cut && c == cut);
            FUZZ_CHECK(sm.matched >= 0 && sm.matched < sm.n_stops);
            FUZZ_CHECK(!strcmp(sm.stops[sm.matched], r.s[w]));
            FUZZ_CHECK(stop_pending(&sm) == 0);
            done = true;
        } else {
            FUZZ_CHECK(!sm.done);
            /* held back: exactly the longest tail that could still start a stop */
            size_t hold = ref_hold(&r, text, fed);
            FUZZ_CHECK(stop_pending(&sm) == hold);
            FUZZ_CHECK(n_shown + hold == fed);
        }
        if (fed >= tlen && (next(&seed) & 1)) break;
    }
    const char *out = NULL;
    long got = stop_flush(&sm, &out);
    FUZZ_CHECK(got >= 0);
    if (done) {
        FUZZ_CHECK(got == 0);
    } else {
        FUZZ_CHECK(which < 0);
        if (got) memcpy(shown + n_shown, out, (size_t)got);
        n_shown += (size_t)got;
        FUZZ_CHECK(n_shown == tlen && !memcmp(shown, text, tlen));
        FUZZ_CHECK(stop_pending(&sm) == 0);
    }
    FUZZ_CHECK(n_shown == cut);
    free(shown);
    stop_free(&sm);
    stop_free(&sm); /* a zeroed matcher is a no-op */
    return 0;
}
