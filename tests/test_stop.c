/* test_stop.c: stop-string matcher vs a whole-text reference, split everywhere. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/stop.h"
#include "tests/check.h"

/* Reference on the whole text, as generation sees it: the first position where some stop
 * string is complete; the text before the start of that stop (the longest one ending there). */
static size_t ref_cut(const char *t, size_t n, const char *const *stops, int ns, int *found) {
    *found = 0;
    for (size_t e = 1; e <= n; e++) {
        size_t cut = n;
        for (int s = 0; s < ns; s++) {
            size_t l = strlen(stops[s]);
            if (l && l <= e && !memcmp(t + e - l, stops[s], l) && e - l < cut) cut = e - l;
        }
        if (cut < n) {
            *found = 1;
            return cut;
        }
    }
    return n;
}

/* Longest suffix of t[0..n) that is a proper prefix of a stop. */
static size_t ref_hold(const char *t, size_t n, const char *const *stops, int ns) {
    size_t best = 0;
    for (int s = 0; s < ns; s++) {
        size_t l = strlen(stops[s]);
        for (size_t k = 1; k < l && k <= n; k++)
            if (!memcmp(t + n - k, stops[s], k) && k > best) best = k;
    }
    return best;
}

/* Feeds t cut at the given positions (ascending, inside 0..n); checks every step. */
static int run_split(const char *t, size_t n, const char *const *stops, int ns, const size_t *cuts,
                     int ncuts) {
    stop_matcher sm;
    if (stop_init(&sm, stops, ns)) return -1;
    char out[4096];
    size_t olen = 0, prev = 0;
    int found;
    size_t want = ref_cut(t, n, stops, ns, &found);
    int bad = 0;
    for (int c = 0; c <= ncuts && !sm.done; c++) {
        size_t end = c < ncuts ? cuts[c] : n;
        const char *o;
        long k = stop_feed(&sm, t + prev, end - prev, &o);
        if (k < 0) {
            bad = 1;
            break;
        }
        memcpy(out + olen, o, (size_t)k);
        olen += (size_t)k;
        if (!sm.done) {
            /* everything decided is out; exactly the possible start of a stop is held */
            int f2;
            size_t cut = ref_cut(t, end, stops, ns, &f2);
            if (f2 || olen != end - ref_hold(t, end, stops, ns) || cut != end) bad = 2;
            if (stop_pending(&sm) != end - olen) bad = 3;
        }
        prev = end;
    }
    if (!sm.done) {
        const char *o;
        long k = stop_flush(&sm, &o);
        memcpy(out + olen, o, (size_t)k);
        olen += (size_t)k;
    }
    if (olen != want || memcmp(out, t, want)) bad = 4;
    if ((int)sm.done != found) bad = 5;
    if (found && (sm.matched < 0 || sm.matched >= ns)) bad = 6;
    if (bad)
        fprintf(stderr, "  failure %d on text '%.*s' (%d cuts, out '%.*s')\n", bad, (int)n, t,
                ncuts, (int)olen, out);
    stop_free(&sm);
    return bad;
}

static void all_splits(const char *t, const char *const *stops, int ns) {
    size_t n = strlen(t);
    CHECK_EQ_INT(run_split(t, n, stops, ns, NULL, 0), 0);
    for (size_t i = 0; i <= n; i++)
        CHECK_EQ_INT(run_split(t, n, stops, ns, &i, 1), 0);
    for (size_t i = 0; i <= n; i++)
        for (size_t j = i; j <= n; j++) {
            size_t cuts[2] = {i, j};
            CHECK_EQ_INT(run_split(t, n, stops, ns, cuts, 2), 0);
        }
    size_t *every = malloc((n + 1) * sizeof *every);
    for (size_t i = 0; i < n; i++)
        every[i] = i + 1;
    CHECK_EQ_INT(run_split(t, n, stops, ns, every, (int)n), 0);
    free(every);
}

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void test_fixed(void) {
    const char *s1[] = {"<|im_end|>"};
    all_splits("Hello world<|im_end|>trailing", s1, 1);
    all_splits("<|im_end|>", s1, 1);
    all_splits("no stop here <|im_en", s1, 1);
    all_splits("<|<|<|im_end|>", s1, 1);
    const char *s2[] = {"\n\n", "END", "ab"};
    all_splits("line one\nline two\n\nline three", s2, 3);
    all_splits("aaab", s2, 3);
    all_splits("ENENDab", s2, 3);
    all_splits("EN", s2, 3);
    const char *s3[] = {"abc", "ab"}; /* same start: the earlier position wins either way */
    all_splits("xxabcx", s3, 2);
    const char *s4[] = {"bc", "abcd"}; /* "bc" is complete first: generation stops there */
    all_splits("xabcdx", s4, 2);
    const char *s5[] = {"é!", "日本"}; /* multi-byte stops */
    all_splits("café! 日本語", s5, 2);
    all_splits("caf\xC3\xA9 日", s5, 2);
    const char *s6[] = {"aaaa"};
    all_splits("aaabaaaab", s6, 1);
}

static void test_random(void) {
    const char alpha[] = "ab<|\n";
    for (int iter = 0; iter < 3000; iter++) {
        char stops_buf[4][8];
        const char *stops[4];
        int ns = 1 + (int)(rnd() % 4);
        for (int s = 0; s < ns; s++) {
            int l = 1 + (int)(rnd() % 5);
            for (int i = 0; i < l; i++)
                stops_buf[s][i] = alpha[rnd() % 5];
            stops_buf[s][l] = 0;
            stops[s] = stops_buf[s];
        }
        char t[64];
        size_t n = rnd() % 40;
        for (size_t i = 0; i < n; i++)
            t[i] = alpha[rnd() % 5];
        t[n] = 0;
        size_t cuts[8];
        int nc = (int)(rnd() % 8);
        for (int c = 0; c < nc; c++)
            cuts[c] = n ? rnd() % (n + 1) : 0;
        for (int a = 0; a < nc; a++) /* sort */
            for (int b = a + 1; b < nc; b++)
                if (cuts[b] < cuts[a]) {
                    size_t x = cuts[a];
                    cuts[a] = cuts[b];
                    cuts[b] = x;
                }
        CHECK_EQ_INT(run_split(t, n, stops, ns, cuts, nc), 0);
        if (iter % 100 == 0) all_splits(t, stops, ns);
    }
}

static void test_edges(void) {
    /* no stops: everything passes straight through */
    stop_matcher sm;
    CHECK_EQ_INT(stop_init(&sm, NULL, 0), 0);
    const char *o;
    CHECK_EQ_INT(stop_feed(&sm, "abc", 3, &o), 3);
    CHECK(!memcmp(o, "abc", 3));
    CHECK_EQ_INT(stop_feed(&sm, "", 0, &o), 0);
    CHECK_EQ_INT(stop_feed(&sm, NULL, 0, &o), 0); /* no bytes may come as a NULL pointer */
    CHECK_EQ_INT(stop_flush(&sm, &o), 0);
    stop_free(&sm);
    /* empty stop strings are ignored */
    const char *e[] = {"", "x"};
    CHECK_EQ_INT(stop_init(&sm, e, 2), 0);
    CHECK_EQ_INT(sm.n_stops, 1);
    CHECK_EQ_INT(stop_feed(&sm, "abxcd", 5, &o), 2);
    CHECK(sm.done);
    CHECK_EQ_INT(sm.matched, 0);
    CHECK_EQ_INT(stop_feed(&sm, "more", 4, &o), 0); /* after a match nothing more comes out */
    CHECK_EQ_INT(stop_flush(&sm, &o), 0);
    stop_free(&sm);
    stop_free(&sm); /* zeroed: no-op */
    /* a piece much larger than the buffer */
    const char *s[] = {"STOP"};
    CHECK_EQ_INT(stop_init(&sm, s, 1), 0);
    char big[10000];
    memset(big, 'z', sizeof big);
    CHECK_EQ_INT(stop_feed(&sm, big, sizeof big - 2, &o), (long)sizeof big - 2);
    memcpy(big, "xxST", 4);
    CHECK_EQ_INT(stop_feed(&sm, big, 4, &o), 2);
    CHECK_EQ_INT(stop_pending(&sm), 2);
    CHECK_EQ_INT(stop_feed(&sm, "OPyy", 4, &o), 0);
    CHECK(sm.done);
    stop_free(&sm);
}

/* One long piece fed to a fresh matcher, after `before` bytes of short text: the piece is
 * longer than the matcher's first buffer (2 * longest stop + 64), so the buffer moves while
 * the call runs. The text returned must be the piece (read from the live buffer, not the
 * block realloc released) and *out must point into the buffer the matcher owns now. */
static void long_piece(const char *const *stops, int ns, size_t before, size_t plen, char fill) {
    stop_matcher sm;
    CHECK_EQ_INT(stop_init(&sm, stops, ns), 0);
    /* a live block right after the buffer, so realloc cannot grow it in place */
    void *blocker = malloc(sm.cap);
    char *piece = malloc(plen), shown[8192];
    CHECK(piece != NULL && blocker != NULL && before + plen <= sizeof shown);
    memset(piece, fill, plen);
    size_t n = 0;
    const char *o = NULL;
    for (size_t i = 0; i < before; i++) {
        long k = stop_feed(&sm, "a", 1, &o);
        CHECK_EQ_INT(k, 1);
        if (k > 0) shown[n++] = o[0];
    }
    long k = stop_feed(&sm, piece, plen, &o);
    CHECK_EQ_INT(k, (long)plen);
    CHECK(o >= sm.buf && o + (k > 0 ? k : 0) <= sm.buf + sm.cap);
    if (k > 0 && o >= sm.buf && o + k <= sm.buf + sm.cap) {
        memcpy(shown + n, o, (size_t)k);
        n += (size_t)k;
    }
    CHECK_EQ_INT(n, before + plen);
    for (size_t i = 0; i < n; i++)
        if (shown[i] != (i < before ? 'a' : fill)) {
            fprintf(stderr, "  byte %zu of %zu is 0x%02x\n", i, n, (unsigned char)shown[i]);
            CHECK(0);
            break;
        }
    /* a stop string after the long piece still matches; the text before it comes out whole */
    if (ns > 0) {
        size_t l = strlen(stops[0]);
        memcpy(piece, stops[0], l);
        k = stop_feed(&sm, piece, plen, &o);
        CHECK(sm.done);
        CHECK_EQ_INT(k, 0);
    } else {
        k = stop_flush(&sm, &o);
        CHECK_EQ_INT(k, 0);
    }
    free(piece);
    free(blocker);
    stop_free(&sm);
}

/* A piece that ends held back (a stop prefix) after a long run: what is shown and what is
 * flushed at the end both come from the live buffer. */
static void long_piece_held(void) {
    const char *s[] = {"<END>"};
    stop_matcher sm;
    CHECK_EQ_INT(stop_init(&sm, s, 1), 0);
    void *blocker = malloc(sm.cap);
    char piece[300];
    memset(piece, '-', sizeof piece);
    memcpy(piece + sizeof piece - 3, "<EN", 3);
    const char *o = NULL;
    long k = stop_feed(&sm, piece, sizeof piece, &o);
    CHECK_EQ_INT(k, (long)sizeof piece - 3);
    CHECK(k > 0 && o >= sm.buf && o + k <= sm.buf + sm.cap);
    for (long i = 0; k > 0 && i < k && o >= sm.buf && o + k <= sm.buf + sm.cap; i++)
        if (o[i] != '-') {
            CHECK(0);
            break;
        }
    k = stop_flush(&sm, &o);
    CHECK_EQ_INT(k, 3);
    CHECK(k == 3 && o >= sm.buf && !memcmp(o, "<EN", 3));
    free(blocker);
    stop_free(&sm);
}

/* Pieces longer than the matcher's first buffer (tokens of 72 spaces exist in real vocabs). */
static void test_long_pieces(void) {
    const char *one[] = {"STOP"};
    const char *two[] = {"\n\nUser:", "x"};
    size_t sizes[] = {65, 72, 144, 200, 1000, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        long_piece(NULL, 0, 0, sizes[i], ' '); /* no stops, at the start */
        long_piece(NULL, 0, 5, sizes[i], '-'); /* no stops, in the middle */
        long_piece(one, 1, 0, sizes[i], ' ');  /* with a stop, at the start */
        long_piece(one, 1, 30, sizes[i], ' '); /* with a stop, in the middle */
        long_piece(two, 2, 7, sizes[i], '=');
    }
    long_piece_held();
}

int main(void) {
    test_fixed();
    test_random();
    test_edges();
    test_long_pieces();
    return check_done("test_stop");
}
