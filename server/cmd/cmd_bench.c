/* cmd_bench.c: `lfm2 bench`: prefill, decode and batched-decode speed of the engine (eng.h only). */
#include <errno.h>
#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"
#include "engine/eng.h"
#include "engine/sample.h"
#include "engine/kern.h"
#include "server/cmd/cli.h"

#define BENCH_MAX_B 64 /* batch sizes in -b */

/* ---- memory read bandwidth: the ceiling of a decode that streams its weights ---- */

#define BW_BYTES ((size_t)512 << 20) /* far past any L3, like a model's weights */
#define BW_THREADS 64

typedef struct bw_part {
    const uint64_t *p;
    size_t n; /* words */
    uint64_t sum;
} bw_part;

static void *bw_read(void *arg) {
    bw_part *b = arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    /* a 64-byte line per step, prefetched 16 KiB ahead as the decode kernels prefetch their
     * weights: the hardware prefetchers alone do not keep one thread's stream fed */
    for (size_t i = 0; i + 8 <= b->n; i += 8) {
        __builtin_prefetch(b->p + i + 2048);
        s0 += b->p[i] ^ b->p[i + 4], s1 += b->p[i + 1] ^ b->p[i + 5];
        s2 += b->p[i + 2] ^ b->p[i + 6], s3 += b->p[i + 3] ^ b->p[i + 7];
    }
    b->sum = s0 ^ s1 ^ s2 ^ s3; /* keeps the loads */
    return NULL;
}

/* Read bandwidth of `threads` threads each streaming its share of BW_BYTES once, best of 3
 * passes, in GB/s; 0 when the buffer or a thread cannot be had. */
static double membw_gbs(int threads) {
    if (threads < 1) threads = 1;
    if (threads > BW_THREADS) threads = BW_THREADS;
    uint64_t *buf = malloc(BW_BYTES);
    if (!buf) return 0;
    const size_t words = BW_BYTES / sizeof *buf, per = words / (size_t)threads;
    for (size_t i = 0; i < words; i++)
        buf[i] = i;
    double best = 0;
    for (int pass = 0; pass < 3; pass++) {
        bw_part parts[BW_THREADS];
        pthread_t th[BW_THREADS];
        int started = 0;
        double t0 = clock_now_s();
        for (int k = 0; k < threads; k++) {
            parts[k] = (bw_part){buf + (size_t)k * per, per, 0};
            if (k && pthread_create(&th[k], NULL, bw_read, &parts[k])) break;
            started++;
        }
        bw_read(&parts[0]);
        for (int k = 1; k < started; k++)
            pthread_join(th[k], NULL);
        double dt = clock_now_s() - t0;
        if (started < threads) {
            best = 0;
            break;
        }
        double gbs = (double)per * sizeof *buf * threads / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: lfm2 bench -m FILE [-p 512] [-n 128] [-b 1,4,8,16] [-t N] [-r 3] [--snap-every K]\n"
            "                  [--json]\n"
            "  Measures the engine on FILE with a fixed pseudo-random prompt of ordinary tokens:\n"
            "  prefill    one sequence, P tokens (in steps of at most max_batch_tokens = P, <= 2048)\n"
            "  decode     N single-token steps (logits each, greedy) after that prefill\n"
            "  batched    for each B in the list: B forks of the prefilled sequence, N steps of\n"
            "             B tokens (one per sequence) in one eng_step each: aggregate tok/s\n"
            "  Each figure is the median of R repetitions (after one warm-up), with min and max.\n"
            "  decode ceiling: memory read bandwidth of T threads (a 512 MiB stream, best probe\n"
            "             after each repetition's decode) over the bytes of weights one decode\n"
            "             step reads: no engine streaming them decodes faster\n"
            "  -m FILE   model (GGUF)\n"
            "  -p P      prompt tokens (default 512; 0 skips prefill, decode starts at position 0)\n"
            "  -n N      decode steps (default 128)\n"
            "  -b LIST   comma-separated batch sizes, each 1..%d (default 1,4,8,16; 0 = none)\n"
            "  -t N      threads (default: number of cores)\n"
            "  -r R      repetitions (default 3)\n"
            "  --snap-every K  also run each prefill again taking conv-state snapshots (as the\n"
            "            server's prompt cache does) every K positions and at the end, alternating\n"
            "            with the plain one; reports that speed and its ratio to the plain one\n"
            "  --json    one JSON object on stdout instead of the table\n"
            "  Exit status: 0 done, 1 the model could not be loaded or run, 2 bad usage.\n",
            BENCH_MAX_B);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, min and max of n samples (sorted in place). */
typedef struct stat3 {
    double med, min, max;
} stat3;
static stat3 stats(double *v, int n) {
    stat3 s = {0, 0, 0};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    s.min = v[0];
    s.max = v[n - 1];
    s.med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

/* The peak before the last reset of VmHWM (see probe_bw), MiB. */
static double hwm_before_reset;

/* The process's peak RSS in MiB, not counting the bandwidth probe's buffer. */
static double peak_rss_mib(void) {
    double mib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        long kib = -1;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM:", 6)) kib = strtol(line + 6, NULL, 10);
        fclose(f);
        if (kib >= 0) mib = kib / 1024.0;
    }
    if (mib < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        mib = ru.ru_maxrss / 1024.0; /* KiB on Linux */
    }
    return mib > hwm_before_reset ? mib : hwm_before_reset;
}

/* Resets VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs); false if refused. */
static bool reset_hwm(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

/* One bandwidth probe (membw_gbs) that leaves the reported peak RSS as it was: the peak so far is
 * kept, the probe's buffer allocated and freed, and VmHWM reset after it. When VmHWM cannot be
 * reset it probes only if allow_after_peak (the peak has been read already), else returns 0. */
static double probe_bw(int threads, bool allow_after_peak) {
    double before = peak_rss_mib();
    if (!reset_hwm() && !allow_after_peak) return 0;
    double gbs = membw_gbs(threads);
    if (before > hwm_before_reset) hwm_before_reset = before;
    reset_hwm();
    return gbs;
}

typedef struct bench {
    eng *e;
    int n_vocab, p, n, max_bt;
    int32_t *prompt; /* [p] */
    float *logits;   /* [BENCH_MAX_B][n_vocab] */
    int snap_every;  /* --snap-every: 0 = off */
    int *snap_at;    /* [p / snap_every + 1] positions of one chunk's snapshots */
    float *snaps;    /* [p / snap_every + 1][eng_snap_floats] */
    char err[512];
} bench;

/* Prefills a new sequence with the prompt; returns it (NULL on error) and the seconds taken. */
static eng_seq *run_prefill(bench *B, int n_ctx, bool snap, double *secs, int *next) {
    eng_seq *s = NULL;
    if (eng_seq_new(B->e, n_ctx, &s, B->err, sizeof B->err)) return NULL;
    double t0 = clock_now_s();
    for (int i = 0; i < B->p; i += B->max_bt) {
        int k = B->p - i < B->max_bt ? B->p - i : B->max_bt;
        eng_batch_item it = {s, B->prompt + i, k, i + k == B->p ? ENG_LOGITS_LAST : ENG_LOGITS_NONE,
                             B->logits};
        eng_batch b = {&it, 1};
        eng_snap_req sr = {B->snap_at, 0, B->snaps};
        for (int q = i + 1; snap && q <= i + k; q++)
            if (q % B->snap_every == 0 || q == B->p) B->snap_at[sr.n++] = q;
        if (eng_step_snap(B->e, &b, snap ? &sr : NULL, B->err, sizeof B->err)) {
            eng_seq_free(s);
            return NULL;
        }
    }
    *secs = clock_now_s() - t0;
    *next = B->p ? sample_argmax(B->logits, B->n_vocab) : B->prompt[0];
    return s;
}

/* n decode steps of nb sequences (one token each, logits for each, greedy). Seconds taken. */
static int run_decode(bench *B, eng_seq **seqs, int nb, int32_t *toks, double *secs) {
    eng_batch_item items[BENCH_MAX_B];
    double t0 = clock_now_s();
    for (int step = 0; step < B->n; step++) {
        for (int i = 0; i < nb; i++)
            items[i] = (eng_batch_item){seqs[i], &toks[i], 1, ENG_LOGITS_LAST,
                                        B->logits + (size_t)i * B->n_vocab};
        eng_batch b = {items, nb};
        if (eng_step(B->e, &b, B->err, sizeof B->err)) return -1;
        for (int i = 0; i < nb; i++)
            toks[i] = sample_argmax(B->logits + (size_t)i * B->n_vocab, B->n_vocab);
    }
    *secs = clock_now_s() - t0;
    return 0;
}

int cmd_bench(int argc, char **argv) {
    const char *path = NULL;
    long p = 512, n = 128, t = 0, reps = 3;
    int json = 0, nb_list = 0, blist[BENCH_MAX_B];
    const char *bspec = "1,4,8,16";
    int B_snap_every = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "-p") || !strcmp(a, "-n") || !strcmp(a, "-b") ||
                   !strcmp(a, "-t") || !strcmp(a, "-r") || !strcmp(a, "--model") ||
                   !strcmp(a, "--threads") || !strcmp(a, "--snap-every")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            int bad = 0;
            long se = 0;
            if (!strcmp(a, "--snap-every")) {
                bad = cli_parse_long(a, v, 1, 1 << 20, &se);
                B_snap_every = (int)se;
            } else if (a[1] == 'm' || !strcmp(a, "--model")) path = v;
            else if (a[1] == 'p') bad = cli_parse_long(a, v, 0, 1 << 20, &p);
            else if (a[1] == 'n') bad = cli_parse_long(a, v, 1, 1 << 20, &n);
            else if (a[1] == 't' || !strcmp(a, "--threads")) bad = cli_parse_long(a, v, 0, 256, &t);
            else if (a[1] == 'r') bad = cli_parse_long(a, v, 1, 1000, &reps);
            else bspec = v;
            if (bad) return 2;
        } else {
            fprintf(stderr, "error: unknown option '%s'\n", a);
            bench_usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "error: no model file: use -m FILE\n");
        bench_usage(stderr);
        return 2;
    }
    if (strcmp(bspec, "0") && strcmp(bspec, "")) {
        const char *s = bspec;
        while (*s) {
            char *end;
            errno = 0;
            long v = strtol(s, &end, 10);
            if (errno || end == s || v < 1 || v > BENCH_MAX_B || (*end && *end != ',') ||
                nb_list >= BENCH_MAX_B) {
                fprintf(stderr,
                        "error: -b '%s': expected a comma-separated list of at most %d batch "
                        "sizes, each in [1, %d]\n",
                        bspec, BENCH_MAX_B, BENCH_MAX_B);
                return 2;
            }
            blist[nb_list++] = (int)v;
            s = *end ? end + 1 : end;
        }
    }
    int max_b = 1;
    for (int i = 0; i < nb_list; i++)
        if (blist[i] > max_b) max_b = blist[i];

    bench B = {0};
    B.p = (int)p;
    B.n = (int)n;
    B.snap_every = B_snap_every;
    B.max_bt = p > 2048 ? 2048 : p < max_b ? max_b : (int)p;
    eng_params ep;
    eng_params_default(&ep);
    ep.n_threads = (int)t;
    ep.max_seqs = max_b + 1;
    ep.max_batch_tokens = B.max_bt;
    int n_ctx = (int)(p + n + 16);
    ep.n_ctx = n_ctx;
    ep.n_restore = 1;
    double t_load = clock_now_s();
    int rc = eng_new(&B.e, path, &ep, B.err, sizeof B.err);
    t_load = clock_now_s() - t_load;
    if (rc) {
        cli_file_error(path, B.err);
        return 1;
    }
    double rss_load = peak_rss_mib();
    B.n_vocab = eng_n_vocab(B.e);
    int threads = t ? (int)t : (int)sysconf(_SC_NPROCESSORS_ONLN);
    rc = 1;
    double *pp = calloc((size_t)reps, sizeof *pp), *tg = calloc((size_t)reps, sizeof *tg);
    double *bt = calloc((size_t)(reps * (nb_list ? nb_list : 1)), sizeof *bt);
    double *ps = calloc((size_t)reps, sizeof *ps), *pr = calloc((size_t)reps, sizeof *pr);
    stat3 sps = {0}, spr = {0};
    if (B.snap_every) {
        B.snap_at = malloc(sizeof(int) * (size_t)(p / B.snap_every + 2));
        B.snaps = malloc(sizeof(float) * eng_snap_floats(B.e) * (size_t)(p / B.snap_every + 2) + 1);
    }
    B.prompt = malloc(sizeof(int32_t) * (size_t)(p ? p : 1));
    B.logits = malloc(sizeof(float) * (size_t)B.n_vocab * BENCH_MAX_B);
    eng_seq *forks[BENCH_MAX_B] = {0};
    eng_seq *s = NULL;
    stat3 spp = {0}, stg = {0}, sbt[BENCH_MAX_B] = {{0}};
    double bw = 0; /* GB/s: the best bandwidth probe */
    if (!pp || !tg || !bt || !ps || !pr || !B.prompt || !B.logits ||
        (B.snap_every && (!B.snap_at || !B.snaps))) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    /* pseudo-random ordinary tokens (ids from 16 up), the same on every run */
    {
        uint64_t x = 12345;
        int span = B.n_vocab > 316 ? B.n_vocab - 300 : B.n_vocab - 16;
        if (span < 1) span = 1;
        for (long i = 0; i < p; i++) {
            x = (x * 1103515245u + 12345u) % 2147483648u;
            B.prompt[i] = (int32_t)(16 + (int64_t)((double)x / 2147483648.0 * span));
            if (B.prompt[i] >= B.n_vocab) B.prompt[i] = B.n_vocab - 1;
        }
        if (!p) B.prompt[0] = B.n_vocab > 16 ? 16 : 0;
    }
    for (long r = 0; r <= reps; r++) { /* r == 0 warms up (page faults, first-touch) */
        double dpp = 0, dtg = 0;
        int next;
        if (B.snap_every && p) { /* the same prefill with snapshots, alternating which goes first */
            double d_on = 0, d_off = 0;
            for (int k = 0; k < 2; k++) {
                bool on = (k == 0) == (r % 2 == 1);
                eng_seq *x = run_prefill(&B, n_ctx, on, on ? &d_on : &d_off, &next);
                if (!x) goto fail_step;
                eng_seq_free(x);
            }
            if (r) {
                ps[r - 1] = p / d_on;
                pr[r - 1] = d_off / d_on;
            }
        }
        s = run_prefill(&B, n_ctx, false, &dpp, &next);
        if (!s) goto fail_step;
        /* every decode runs on forks, so s stays at position p for the next fork */
        int32_t tok = next;
        if (eng_seq_fork(s, -1, n_ctx, &forks[0], B.err, sizeof B.err)) goto fail_step;
        if (run_decode(&B, forks, 1, &tok, &dtg)) goto fail_step;
        eng_seq_free(forks[0]);
        forks[0] = NULL;
        if (r) {
            pp[r - 1] = p ? p / dpp : 0;
            tg[r - 1] = n / dtg;
            /* the host's bandwidth drifts over minutes: probe it next to each decode, keep the
             * best */
            double gbs = probe_bw(threads, false);
            if (gbs > bw) bw = gbs;
        }
        for (int k = 0; k < nb_list; k++) {
            int nb = blist[k];
            int32_t toks[BENCH_MAX_B];
            for (int i = 0; i < nb; i++) {
                if (eng_seq_fork(s, -1, n_ctx, &forks[i], B.err, sizeof B.err))
                    goto fail_step;
                toks[i] = next;
            }
            double dbt = 0;
            if (run_decode(&B, forks, nb, toks, &dbt)) goto fail_step;
            if (r) bt[k * reps + r - 1] = (double)nb * n / dbt;
            for (int i = 0; i < nb; i++) {
                eng_seq_free(forks[i]);
                forks[i] = NULL;
            }
        }
        eng_seq_free(s);
        s = NULL;
        if (!json && r == 0) fprintf(stderr, "bench: warm-up done, %ld repetitions...\n", reps);
    }
    spp = stats(pp, (int)reps);
    stg = stats(tg, (int)reps);
    if (B.snap_every && p) {
        sps = stats(ps, (int)reps);
        spr = stats(pr, (int)reps);
    }
    for (int k = 0; k < nb_list; k++) sbt[k] = stats(bt + k * reps, (int)reps);
    double rss = peak_rss_mib();
    if (bw == 0) bw = probe_bw(threads, true); /* VmHWM could not be reset: probe after all */
    const double wmib = eng_decode_bytes(B.e) / (1024.0 * 1024.0);
    const double ceil_tok_s = wmib > 0 ? bw * 1e9 / (wmib * 1024.0 * 1024.0) : 0;
    struct stat fst;
    double file_mib = stat(path, &fst) == 0 ? fst.st_size / (1024.0 * 1024.0) : 0;
    const char *core = openblas_get_corename();
    if (json) {
        printf("{\"model\":\"");
        for (const char *c = path; *c; c++) {
            if (*c == '"' || *c == '\\') putchar('\\');
            if ((unsigned char)*c >= 0x20) putchar(*c);
        }
        printf("\",\"file_mib\":%.2f,\"p\":%ld,\"n\":%ld,\"reps\":%ld,", file_mib, p, n, reps);
        printf("\"pp_tok_s\":%.2f,\"pp_min\":%.2f,\"pp_max\":%.2f,", spp.med, spp.min, spp.max);
        printf("\"tg_tok_s\":%.2f,\"tg_min\":%.2f,\"tg_max\":%.2f,", stg.med, stg.min, stg.max);
        if (B.snap_every && p)
            printf("\"snap_every\":%d,\"pp_snap_tok_s\":%.2f,\"snap_ratio\":%.4f,"
                   "\"snap_ratio_min\":%.4f,\"snap_ratio_max\":%.4f,",
                   B.snap_every, sps.med, spr.med, spr.min, spr.max);
        const char *keys[3] = {"batched_tok_s", "batched_min", "batched_max"};
        for (int q = 0; q < 3; q++) {
            printf("\"%s\":{", keys[q]);
            for (int k = 0; k < nb_list; k++)
                printf("%s\"%d\":%.2f", k ? "," : "", blist[k],
                       q == 0 ? sbt[k].med : q == 1 ? sbt[k].min : sbt[k].max);
            printf("},");
        }
        printf("\"decode_weights_mib\":%.3f,\"mem_read_gbs\":%.3f,\"tg_ceiling_tok_s\":%.2f,",
               wmib, bw, ceil_tok_s);
        printf("\"peak_rss_mib\":%.1f,\"rss_after_load_mib\":%.1f,\"load_s\":%.3f,\"threads\":%d,"
               "\"kernel\":\"%s\",\"openblas_core\":\"%s\"}\n",
               rss, rss_load, t_load, threads, kern_name(), core ? core : "?");
    } else {
        printf("model       %s (%.1f MiB), %d threads, kernel %s, OpenBLAS core %s\n", path,
               file_mib, threads, kern_name(), core ? core : "?");
        printf("load        %.2f s, peak RSS %.1f MiB after load, %.1f MiB overall\n", t_load,
               rss_load, rss);
        printf("%-24s %10s %10s %10s   (%ld reps)\n", "test", "median", "min", "max", reps);
        if (p) printf("%-24s %10.1f %10.1f %10.1f   tok/s\n", "prefill", spp.med, spp.min, spp.max);
        if (p && B.snap_every) {
            char sl[64];
            snprintf(sl, sizeof sl, "prefill, snap every %d", B.snap_every);
            printf("%-24s %10.1f %10.1f %10.1f   tok/s\n", sl, sps.med, sps.min, sps.max);
            printf("%-24s %10.4f %10.4f %10.4f   snapshots on / off, same reps alternating\n",
                   "  ratio", spr.med, spr.min, spr.max);
        }
        char label[64];
        snprintf(label, sizeof label, "decode (%ld tok @ %ld)", n, p);
        printf("%-24s %10.1f %10.1f %10.1f   tok/s\n", label, stg.med, stg.min, stg.max);
        printf("%-24s %10.1f   tok/s: memory read %.1f GB/s (%d threads) / %.1f MiB of weights a "
               "step; decode at %.0f%%\n",
               "decode ceiling", ceil_tok_s, bw, threads, wmib,
               ceil_tok_s > 0 ? 100 * stg.med / ceil_tok_s : 0);
        for (int k = 0; k < nb_list; k++) {
            snprintf(label, sizeof label, "batched decode x%d", blist[k]);
            printf("%-24s %10.1f %10.1f %10.1f   tok/s aggregate (%.2fx decode)\n", label,
                   sbt[k].med, sbt[k].min, sbt[k].max, stg.med > 0 ? sbt[k].med / stg.med : 0);
        }
    }
    rc = 0;
    goto done;
fail_step:
    fprintf(stderr, "error: %s\n", B.err);
done:
    for (int i = 0; i < BENCH_MAX_B; i++) eng_seq_free(forks[i]);
    eng_seq_free(s);
    eng_free(B.e);
    free(B.logits);
    free(B.prompt);
    free(bt);
    free(ps);
    free(pr);
    free(B.snap_at);
    free(B.snaps);
    free(tg);
    free(pp);
    return rc;
}
