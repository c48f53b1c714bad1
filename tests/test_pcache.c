/* test_pcache.c: the prompt cache on a real tiny model: resume at the deepest snapshot inside the
 * longest prefix with the same bits as a full prefill, merging of extended entries, the budget
 * and eviction order, miss reasons, template rewrites. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <malloc.h>
#include <sys/resource.h>
#include "engine/eng.h"
#include "server/pcache.h"
#include "synth/mkmodel.h"
#include "tests/check.h"

static eng *E;
static int V;
static size_t SF;

/* Feeds ids[0, n) to a fresh sequence in one step, snapshotting at each of at[0, n_at) (positions
 * in (0, n]) into sn; logits of the last token into lg when given. */
static eng_seq *feed(const int32_t *ids, int n, const int *at, int n_at, pcache_snaps *sn,
                     float *lg) {
    char err[256];
    eng_seq *s;
    CHECK(eng_seq_new(E, 256, &s, err, sizeof err) == 0);
    eng_batch_item it = {s, ids, n, lg ? ENG_LOGITS_LAST : ENG_LOGITS_NONE, lg};
    eng_batch b = {&it, 1};
    if (!n_at) {
        CHECK(eng_step(E, &b, err, sizeof err) == 0);
        return s;
    }
    CHECK(pcache_snaps_reserve(sn, SF, n_at) == 0);
    for (int k = 0; k < n_at; k++)
        sn->pos[sn->n + k] = at[k];
    eng_snap_req r = {sn->pos + sn->n, n_at, sn->data + (size_t)sn->n * SF};
    CHECK(eng_step_snap(E, &b, &r, err, sizeof err) == 0);
    sn->n += n_at;
    return s;
}

/* Continues s with ids[from, n) and returns the last logits in lg. */
static void finish(eng_seq *s, const int32_t *ids, int from, int n, float *lg) {
    char err[256];
    eng_batch_item it = {s, ids + from, n - from, ENG_LOGITS_LAST, lg};
    eng_batch b = {&it, 1};
    CHECK(eng_step(E, &b, err, sizeof err) == 0);
}

static void ids_fill(int32_t *ids, int n, int salt) {
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)((i * 7919 + 13 + salt * 104729) % (V - 64)) + 32;
}

int main(void) {
    char err[512], path[1024];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/test_pcache_%d.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    mkmodel_opts mo = {0};
    CHECK_EQ_INT(mkmodel_preset("tiny", &mo.shape, err, sizeof err), 0);
    mo.seed = 3;
    mo.ftype = MK_Q4_0; /* the int8 path: a step's rows never depend on the step's size */
    mo.preset = "tiny";
    if (mkmodel_write(&mo, path, err, sizeof err) < 0) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    eng_params ep;
    eng_params_default(&ep);
    ep.n_threads = 2;
    ep.n_restore = 1; /* as the server runs it */
    if (eng_new(&E, path, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "eng_new: %s\n", err);
        return 1;
    }
    V = eng_n_vocab(E);
    SF = eng_snap_floats(E);
    const int32_t think = tok_find(eng_tok(E), "<think>", 7);
    CHECK(think >= 0);
    float *want = malloc((size_t)V * sizeof(float)), *got = malloc((size_t)V * sizeof(float));
    int32_t a[64], b[64], c[64];
    ids_fill(a, 64, 1);
    ids_fill(b, 64, 2);
    ids_fill(c, 64, 3);
    pcache_stats st;
    int reason;

    /* disabled: a budget of 0 stores and reuses nothing */
    pcache *off;
    CHECK(pcache_new(&off, E, 0, think) == 0);
    pcache_snaps sn = {0}, carry = {0};
    const int at30[3] = {10, 20, 30};
    eng_seq *s = feed(a, 30, at30, 3, &sn, NULL);
    CHECK_EQ_INT(pcache_insert(off, a, 30, NULL, s, &sn, NULL), -1);
    eng_seq *r;
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(off, a, 40, 39, r, &carry, &reason), 0);
    CHECK_EQ_INT(reason, PCACHE_MISS_DISABLED);
    eng_seq_free(r);
    pcache_free(off);

    /* one entry of a[0, 30) with snapshots at 10, 20, 30 */
    pcache *pc;
    CHECK(pcache_new(&pc, E, 64 << 20, think) == 0);
#ifndef __SANITIZE_ADDRESS__ /* ASan's allocator does not report through mallinfo2 */
    /* the bytes an entry counts are the bytes it holds: heap growth from the insert is at most
     * its count plus the cache's entry table and malloc's headers */
    const size_t heap0 = mallinfo2().uordblks;
#endif
    CHECK_EQ_INT(pcache_insert(pc, a, 30, NULL, s, &sn, NULL), 0);
#ifndef __SANITIZE_ADDRESS__
    pcache_stats_get(pc, &st);
    const size_t heap1 = mallinfo2().uordblks;
    CHECK(heap1 <= heap0 + st.bytes + 1024);
#endif
    eng_seq_free(s);
    pcache_snaps_free(&sn);
    pcache_stats_get(pc, &st);
    CHECK_EQ_INT(st.entries, 1);
    const uint64_t one = st.bytes; /* 30 tokens: ids, K/V rows, 3 snapshots */
    CHECK(one >= 30 * (eng_kv_halves(E) * 2 + 4) + 3 * SF * sizeof(float));

    /* a prompt sharing 25 tokens resumes at 20, carries 10 and 20, and continues with the bits
     * of a full prefill */
    int32_t p[64];
    memcpy(p, a, sizeof p);
    p[25] = b[25];
    eng_seq_free(feed(p, 40, NULL, 0, &sn, want));
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(pc, p, 40, 39, r, &carry, &reason), 20);
    CHECK_EQ_INT(reason, PCACHE_HIT);
    CHECK_EQ_INT(carry.n, 2);
    CHECK(carry.n == 2 && carry.pos[0] == 10 && carry.pos[1] == 20);
    finish(r, p, 20, 40, got);
    CHECK(memcmp(want, got, (size_t)V * sizeof(float)) == 0);
    eng_seq_free(r);
    pcache_snaps_free(&carry);

    /* the limit holds: the whole entry matches but only 29 tokens may be reused -> 20 */
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(pc, a, 30, 29, r, &carry, &reason), 20);
    eng_seq_free(r);
    pcache_snaps_free(&carry);

    /* an extension a[0, 45) resumed at 30 and stored replaces the entry, keeping its snapshots */
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(pc, a, 45, 44, r, &carry, &reason), 30);
    finish(r, a, 30, 45, got);
    CHECK_EQ_INT(pcache_insert(pc, a, 40, a + 40, r, &carry, NULL), 0);
    eng_seq_free(r);
    pcache_snaps_free(&carry);
    pcache_stats_get(pc, &st);
    CHECK_EQ_INT(st.entries, 1);
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    memcpy(p, a, sizeof p);
    p[36] = b[36];
    CHECK_EQ_INT(pcache_resume(pc, p, 50, 49, r, &carry, &reason), 30);
    CHECK_EQ_INT(carry.n, 3);
    eng_seq_free(r);
    pcache_snaps_free(&carry);

    /* a prefix a[0, 35) of the entry (a one-token answer to a prompt it extends, a cancelled
     * request) adds its snapshot at 35 to the entry instead of a second copy of its K/V */
    pcache_stats_get(pc, &st);
    const uint64_t ext = st.bytes;
    const int at35[1] = {35};
    s = feed(a, 35, at35, 1, &sn, NULL);
    CHECK_EQ_INT(pcache_insert(pc, a, 35, NULL, s, &sn, NULL), 0);
    eng_seq_free(s);
    pcache_snaps_free(&sn);
    pcache_stats_get(pc, &st);
    CHECK_EQ_INT(st.entries, 1);
    CHECK(st.bytes == ext + sizeof(int) + SF * sizeof(float));
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(pc, p, 50, 49, r, &carry, &reason), 35);
    CHECK_EQ_INT(carry.n, 4);
    eng_seq_free(r);
    pcache_snaps_free(&carry);

    /* nothing in common: no_entry */
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(pc, c, 40, 39, r, &carry, &reason), 0);
    CHECK_EQ_INT(reason, PCACHE_MISS_NO_ENTRY);
    CHECK_EQ_INT(eng_seq_pos(r), 0);
    eng_seq_free(r);

    /* a prompt that leaves the entry where it had generated <think> counts as a rewrite and
     * still reuses everything before it */
    int32_t t[40];
    memcpy(t, c, sizeof t);
    t[20] = think;
    const int at20[1] = {20};
    s = feed(t, 30, at20, 1, &sn, NULL);
    CHECK_EQ_INT(pcache_insert(pc, t, 20, t + 20, s, &sn, NULL), 0);
    eng_seq_free(s);
    pcache_snaps_free(&sn);
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(pc, c, 40, 39, r, &carry, &reason), 20);
    pcache_stats_get(pc, &st);
    CHECK_EQ_INT(st.rewrites, 1);
    eng_seq_free(r);
    pcache_snaps_free(&carry);
    pcache_free(pc);

    /* a budget for two entries of 30 tokens: the third evicts the one used least lately, the
     * cache never holds more than its budget, and a prompt the evicted one would have served
     * is an "evicted" miss */
    const size_t budget = 2 * one + one / 2;
    CHECK(pcache_new(&pc, E, budget, think) == 0);
    const int32_t *src[3] = {a, b, c};
    for (int k = 0; k < 2; k++) {
        s = feed(src[k], 30, at30, 3, &sn, NULL);
        CHECK_EQ_INT(pcache_insert(pc, src[k], 30, NULL, s, &sn, NULL), 0);
        eng_seq_free(s);
        pcache_snaps_free(&sn);
    }
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0); /* a is used again: b is older */
    CHECK_EQ_INT(pcache_resume(pc, a, 40, 39, r, &carry, &reason), 30);
    eng_seq_free(r);
    pcache_snaps_free(&carry);
    s = feed(c, 30, at30, 3, &sn, NULL);
    CHECK_EQ_INT(pcache_insert(pc, c, 30, NULL, s, &sn, NULL), 0);
    eng_seq_free(s);
    pcache_snaps_free(&sn);
    pcache_stats_get(pc, &st);
    CHECK_EQ_INT(st.entries, 2);
    CHECK_EQ_INT(st.evictions, 1);
    CHECK(st.bytes <= budget);
    CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(pcache_resume(pc, b, 40, 39, r, &carry, &reason), 0);
    CHECK_EQ_INT(reason, PCACHE_MISS_EVICTED);
    CHECK_EQ_INT(pcache_resume(pc, a, 40, 39, r, &carry, &reason), 30);
    eng_seq_free(r);
    pcache_snaps_free(&carry);
    pcache_free(pc);

    /* an entry larger than the whole budget is not kept */
    CHECK(pcache_new(&pc, E, one / 2, think) == 0);
    s = feed(a, 30, at30, 3, &sn, NULL);
    CHECK_EQ_INT(pcache_insert(pc, a, 30, NULL, s, &sn, NULL), -1);
    pcache_stats_get(pc, &st);
    CHECK(st.entries == 0 && st.bytes == 0);
    eng_seq_free(s);
    pcache_snaps_free(&sn);
    pcache_free(pc);
    CHECK_EQ_INT(strcmp(pcache_reason_name(PCACHE_MISS_EVICTED), "evicted"), 0);

    /* the cache in a file: two entries written, read back into a new cache, resumed with the
     * same bits; a missing, stale, truncated, corrupt or padded file adds nothing */
    {
        char file[1200], bad[1200];
        snprintf(file, sizeof file, "%s.cache", path);
        snprintf(bad, sizeof bad, "%s.bad", path);
        const uint64_t key = pcache_model_key(E);
        CHECK(pcache_new(&pc, E, 64 << 20, think) == 0);
        for (int k = 0; k < 2; k++) {
            s = feed(src[k], 30, at30, 3, &sn, NULL);
            CHECK_EQ_INT(pcache_insert(pc, src[k], 30, NULL, s, &sn, NULL), 0);
            eng_seq_free(s);
            pcache_snaps_free(&sn);
        }
        CHECK_EQ_INT(pcache_save(pc, file, key, err, sizeof err), 0);
        pcache_stats_get(pc, &st);
        const uint64_t held = st.bytes;
        pcache_free(pc);
        CHECK(pcache_new(&pc, E, 64 << 20, think) == 0);
        CHECK_EQ_INT(pcache_load(pc, file, key, err, sizeof err), 2);
        pcache_stats_get(pc, &st);
        CHECK(st.entries == 2 && st.bytes == held);
        memcpy(p, b, sizeof p);
        p[25] = a[25];
        eng_seq_free(feed(p, 40, NULL, 0, &sn, want));
        CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
        CHECK_EQ_INT(pcache_resume(pc, p, 40, 39, r, &carry, &reason), 20);
        finish(r, p, 20, 40, got);
        CHECK(memcmp(want, got, (size_t)V * sizeof(float)) == 0);
        eng_seq_free(r);
        pcache_snaps_free(&carry);
        pcache_free(pc);
        /* the file's bytes, for broken copies */
        FILE *f = fopen(file, "rb");
        CHECK(f != NULL);
        static unsigned char buf[4 << 20];
        size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f) fclose(f);
        CHECK(len > 64 && len < sizeof buf);
        struct {
            const char *what, *want;
            size_t len;
            long flip; /* byte to change, -1: none */
        } cases[] = {
            {"missing", "No such file", 0, -2},
            {"empty", "truncated header", 0, -1},
            {"header only", "truncated at entry 0", 48, -1},
            {"half", "truncated in entry", len / 2, -1},
            {"all but one byte", "truncated in entry 1", len - 1, -1},
            {"flipped magic", "bad magic", len, 0},
            {"flipped version", "version", len, 8},
            {"flipped key", "another model", len, 16},
            {"flipped count", "entries", len, 40 + 7},
            {"flipped token count", "tokens", len, 48 + 3},
            {"flipped K/V byte", "corrupt", len, (long)len / 3},
            {"flipped last checksum", "corrupt", len, (long)len - 2},
            {"padded", "after the last entry", len + 1, -1},
        };
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            unlink(bad);
            if (cases[k].flip != -2) {
                f = fopen(bad, "wb");
                buf[len] = 0;
                if (cases[k].flip >= 0) buf[cases[k].flip] ^= 0x5a;
                fwrite(buf, 1, cases[k].len, f);
                fclose(f);
                if (cases[k].flip >= 0) buf[cases[k].flip] ^= 0x5a;
            }
            CHECK(pcache_new(&pc, E, 64 << 20, think) == 0);
            err[0] = 0;
            CHECK_EQ_INT(pcache_load(pc, bad, key, err, sizeof err), -1);
            if (!strstr(err, cases[k].want))
                fprintf(stderr, "%s: message '%s' lacks '%s'\n", cases[k].what, err, cases[k].want);
            CHECK(strstr(err, cases[k].want) != NULL);
            pcache_stats_get(pc, &st);
            CHECK(st.entries == 0 && st.bytes == 0);
            pcache_free(pc);
        }
        /* an entry claiming 1 << 24 tokens in a short file is refused as truncated before any
         * room for it is allocated: with the address space capped 512 MiB above what the
         * process maps now, allocating it first would fail as "out of memory" */
        {
            unsigned char huge[48 + 8 + 64];
            memcpy(huge, buf, 48);
            const uint32_t nn[2] = {1u << 24, 1};
            memcpy(huge + 48, nn, 8);
            memset(huge + 56, 0, 64);
            f = fopen(bad, "wb");
            fwrite(huge, 1, sizeof huge, f);
            fclose(f);
            CHECK(pcache_new(&pc, E, 64 << 20, think) == 0);
            struct rlimit old;
            bool capped = false;
#ifndef __SANITIZE_ADDRESS__ /* ASan maps terabytes of shadow: no cap under it */
            long pages = 0;
            FILE *sm = fopen("/proc/self/statm", "r");
            if (sm && fscanf(sm, "%ld", &pages) == 1 && getrlimit(RLIMIT_AS, &old) == 0) {
                struct rlimit cap = old;
                cap.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (512u << 20);
                capped = setrlimit(RLIMIT_AS, &cap) == 0;
            }
            if (sm) fclose(sm);
#endif
            err[0] = 0;
            CHECK_EQ_INT(pcache_load(pc, bad, key, err, sizeof err), -1);
            if (capped) setrlimit(RLIMIT_AS, &old);
            if (!strstr(err, "truncated in entry 0")) fprintf(stderr, "huge entry: '%s'\n", err);
            CHECK(strstr(err, "truncated in entry 0") != NULL);
            pcache_free(pc);
        }
        /* a small budget keeps the newest entries of the file */
        CHECK(pcache_new(&pc, E, held / 2 + 1024, think) == 0);
        CHECK_EQ_INT(pcache_load(pc, file, key, err, sizeof err), 1);
        pcache_stats_get(pc, &st);
        CHECK(st.entries == 1 && st.bytes <= held / 2 + 1024);
        CHECK(eng_seq_new(E, 256, &r, err, sizeof err) == 0);
        CHECK_EQ_INT(pcache_resume(pc, b, 40, 39, r, &carry, &reason), 30);
        eng_seq_free(r);
        pcache_snaps_free(&carry);
        pcache_free(pc);
        /* a file far larger than the budget is read holding about the budget, not the file:
         * with the process's data capped 24 MiB above what it maps now, 48 MiB of entries
         * load into a 4 MiB cache, the newest ones */
        {
            CHECK(pcache_new(&pc, E, 256 << 20, think) == 0);
            int32_t big[250];
            ids_fill(big, 250, 4);
            s = feed(big, 250, NULL, 0, &sn, NULL);
            for (int k = 0; st.bytes < (48u << 20) && k < 4000; k++) {
                big[0] = 32 + k % (V - 64); /* no entry a prefix of another */
                big[1] = 32 + k / (V - 64);
                CHECK_EQ_INT(pcache_insert(pc, big, 250, NULL, s, NULL, NULL), 0);
                pcache_stats_get(pc, &st);
            }
            eng_seq_free(s);
            CHECK(st.bytes >= (48u << 20));
            CHECK_EQ_INT(pcache_save(pc, file, key, err, sizeof err), 0);
            pcache_free(pc);
            CHECK(pcache_new(&pc, E, 4 << 20, think) == 0);
            struct rlimit old;
            bool capped = false;
#ifndef __SANITIZE_ADDRESS__ /* ASan's allocator keeps freed memory in quarantine */
            long size = 0, resident = 0, shared = 0, text = 0, lib = 0, data = 0;
            FILE *sm = fopen("/proc/self/statm", "r");
            if (sm && fscanf(sm, "%ld %ld %ld %ld %ld %ld", &size, &resident, &shared, &text, &lib,
                             &data) == 6 &&
                getrlimit(RLIMIT_DATA, &old) == 0) {
                struct rlimit cap = old;
                cap.rlim_cur = (rlim_t)data * (rlim_t)sysconf(_SC_PAGESIZE) + (24u << 20);
                capped = setrlimit(RLIMIT_DATA, &cap) == 0;
            }
            if (sm) fclose(sm);
#endif
            err[0] = 0;
            const int got_n = pcache_load(pc, file, key, err, sizeof err);
            if (capped) setrlimit(RLIMIT_DATA, &old);
            if (got_n <= 0) fprintf(stderr, "big file: %d, '%s'\n", got_n, err);
            CHECK(got_n > 0);
            pcache_stats_get(pc, &st);
            CHECK(st.bytes > 0 && st.bytes <= (4u << 20));
            pcache_free(pc);
        }
        unlink(file);
        unlink(bad);
    }

    free(want);
    free(got);
    eng_free(E);
    unlink(path);
    return check_done("test_pcache");
}
