/* pool.c: persistent thread pool: lock-free task claiming, spin-then-sleep workers. */
#include "engine/pool.h"
#include "engine/clock.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* The job word packs generation (24 bits) and task count (20 bits); it announces a job. The tasks
 * are cut into one contiguous region per thread, each with its own word: generation, end (20) and
 * next task index (20), so a worker can only ever claim a task of the job it saw start (a stale
 * claim fails its compare-exchange). A thread runs its own region front to back, then helps with
 * the others' (from their fronts): a decode step's matrices are then read as one sequential
 * stream per thread (what the hardware prefetchers and our prefetch distance want), and a thread
 * that runs slower than the others (memory, another process) still gets help at the end. */
#define IDX_BITS 20
#define IDX_MASK ((1u << IDX_BITS) - 1)
#define MAX_TASKS ((int)IDX_MASK)
#define W_GEN(w) ((uint32_t)((w) >> (2 * IDX_BITS)))
#define W_NT(w) ((uint32_t)((w) >> IDX_BITS) & IDX_MASK)
#define W_IDX(w) ((uint32_t)(w)&IDX_MASK)

struct pool {
    int n;         /* threads including the caller */
    pthread_t *th; /* [n - 1] */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t word; /* gen | n_tasks | 0 */
    struct region {
        _Alignas(64) _Atomic uint64_t word; /* gen | end | next, one cache line each */
    } * rg;                                 /* [n] */
    _Atomic int done;      /* tasks finished in the current job */
    _Atomic int sleepers;  /* workers blocked (or about to block) on cv */
    _Atomic int stop;
    pool_fn fn; /* current job, published by the release store of word */
    void *ctx;
    long spin_ns; /* how long an idle worker spins before sleeping */
    struct worker {
        pool *p;
        int id;
    } * w;
};

/* Claims and runs tasks of generation gen (n_tasks of them) until none is left: its own region
 * first, then the next threads' regions in turn. */
static void work(pool *p, uint32_t gen, int n_tasks, int thread) {
    for (int k = 0; k < p->n; k++) {
        _Atomic uint64_t *rw = &p->rg[(thread + k) % p->n].word;
        for (;;) {
            uint64_t w = atomic_load(rw);
            if (W_GEN(w) != (gen & 0xffffff) || W_IDX(w) >= W_NT(w)) break;
            if (!atomic_compare_exchange_weak(rw, &w, w + 1)) continue;
            p->fn(p->ctx, (int)W_IDX(w), n_tasks, thread);
            atomic_fetch_add(&p->done, 1);
        }
    }
}

static void *worker_main(void *arg) {
    struct worker *wk = arg;
    pool *p = wk->p;
    uint32_t seen = W_GEN(atomic_load(&p->word));
    for (;;) {
        long t0 = 0;
        unsigned spins = 0;
        uint32_t g;
        uint64_t jw;
        while ((g = W_GEN(jw = atomic_load(&p->word))) == seen && !atomic_load(&p->stop)) {
            cpu_relax();
            if ((++spins & 255) == 0) {
                long t = (long)clock_now_ns();
                if (!t0)
                    t0 = t;
                else if (t - t0 > p->spin_ns) {
                    pthread_mutex_lock(&p->mu);
                    atomic_fetch_add(&p->sleepers, 1);
                    while (W_GEN(atomic_load(&p->word)) == seen && !atomic_load(&p->stop))
                        pthread_cond_wait(&p->cv, &p->mu);
                    atomic_fetch_sub(&p->sleepers, 1);
                    pthread_mutex_unlock(&p->mu);
                    t0 = 0;
                }
            }
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        work(p, g, (int)W_NT(jw), wk->id);
    }
}

pool *pool_new(int n_threads, char *err, size_t errlen) {
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > 256) n_threads = 256;
    pool *p = calloc(1, sizeof *p);
    if (!p) goto nomem;
    p->n = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->spin_ns = 200000; /* 200 us: covers the gaps between the ops of a decode step */
    const char *s = getenv("LFM2_POOL_SPIN_US");
    if (s && *s) p->spin_ns = atol(s) * 1000L;
    p->rg = aligned_alloc(64, sizeof *p->rg * (size_t)n_threads);
    if (!p->rg) goto nomem;
    for (int i = 0; i < n_threads; i++)
        atomic_init(&p->rg[i].word, 0);
    if (n_threads > 1) {
        p->th = calloc((size_t)n_threads - 1, sizeof *p->th);
        p->w = calloc((size_t)n_threads - 1, sizeof *p->w);
        if (!p->th || !p->w) goto nomem;
        for (int i = 1; i < n_threads; i++) {
            p->w[i - 1] = (struct worker){p, i};
            int rc = pthread_create(&p->th[i - 1], NULL, worker_main, &p->w[i - 1]);
            if (rc) {
                snprintf(err, errlen, "pool: cannot start worker thread %d of %d (error %d)", i,
                         n_threads, rc);
                pool_free(p);
                return NULL;
            }
            p->n = i + 1;
        }
    }
    return p;
nomem:
    if (p) pool_free(p);
    snprintf(err, errlen, "pool: out of memory for %d threads", n_threads);
    return NULL;
}

void pool_free(pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->th);
    free(p->w);
    free(p->rg);
    free(p);
}

int pool_n_threads(const pool *p) {
    return p ? p->n : 1;
}

void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1 || n_tasks > MAX_TASKS) {
        for (int i = 0; i < n_tasks; i++)
            fn(ctx, i, n_tasks, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->done, 0);
    uint64_t old = atomic_load(&p->word);
    uint32_t gen = (W_GEN(old) + 1) & 0xffffff;
    for (int t = 0; t < p->n; t++) { /* regions first: a worker reads them after the job word */
        int64_t lo, hi;
        pool_split(n_tasks, p->n, t, &lo, &hi);
        atomic_store(&p->rg[t].word,
                     (uint64_t)gen << (2 * IDX_BITS) | (uint64_t)hi << IDX_BITS | (uint64_t)lo);
    }
    atomic_store(&p->word, (uint64_t)gen << (2 * IDX_BITS) | (uint64_t)n_tasks << IDX_BITS);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    work(p, gen, n_tasks, 0);
    /* stragglers: spin, then yield now and then (a descheduled worker may need this core) */
    for (unsigned spins = 0; atomic_load(&p->done) < n_tasks; spins++) {
        cpu_relax();
        if ((spins & 1023) == 1023) sched_yield();
    }
}

void pool_split(int64_t n, int n_parts, int i, int64_t *lo, int64_t *hi) {
    int64_t q = n / n_parts, r = n % n_parts;
    *lo = i * q + (i < r ? i : r);
    *hi = *lo + q + (i < r ? 1 : 0);
}
