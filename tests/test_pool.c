/* test_pool.c: every task runs exactly once, parallel reductions are right, no deadlock over many
 * runs (spinning and sleeping workers), pool_free joins its threads. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "engine/pool.h"
#include "tests/check.h"

typedef struct job {
    _Atomic int *count; /* [n_tasks] times each task ran */
    _Atomic int bad_thread;
    int n_threads;
    const double *v;
    int64_t n;
    double *partial; /* [n_tasks] */
} job;

static void count_task(void *ctx, int task, int n_tasks, int thread) {
    job *j = ctx;
    (void)n_tasks;
    if (thread < 0 || thread >= j->n_threads) atomic_store(&j->bad_thread, 1);
    atomic_fetch_add(&j->count[task], 1);
}

static void sum_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    job *j = ctx;
    int64_t lo, hi;
    pool_split(j->n, n_tasks, task, &lo, &hi);
    double s = 0;
    for (int64_t i = lo; i < hi; i++)
        s += j->v[i];
    j->partial[task] = s;
}

static int n_os_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) n = atoi(line + 8);
    if (f) fclose(f);
    return n;
}

static void run_pool(int n_threads, int runs) {
    char err[256];
    int before = n_os_threads();
    pool *p = pool_new(n_threads, err, sizeof err);
    CHECK(p != NULL);
    if (!p) return;
    CHECK_EQ_INT(pool_n_threads(p), n_threads);
    CHECK_EQ_INT(n_os_threads(), before + n_threads - 1);
    enum { MAXT = 67 };
    _Atomic int count[MAXT];
    job j = {.count = count, .n_threads = n_threads};
    for (int r = 0; r < runs; r++) {
        int nt = 1 + r % MAXT;
        for (int i = 0; i < MAXT; i++)
            atomic_store(&count[i], 0);
        pool_run(p, count_task, &j, nt);
        int wrong = 0;
        for (int i = 0; i < MAXT; i++)
            wrong += atomic_load(&count[i]) != (i < nt);
        CHECK_EQ_INT(wrong, 0);
        if (wrong) break;
        if (r % 97 == 0) usleep(2000); /* let the workers fall asleep now and then */
    }
    CHECK_EQ_INT(atomic_load(&j.bad_thread), 0);
    /* a parallel reduction with a known answer */
    int64_t n = 1000003;
    double *v = malloc((size_t)n * sizeof *v), partial[64];
    for (int64_t i = 0; i < n; i++)
        v[i] = (double)(i % 1000);
    double want = 0;
    for (int64_t i = 0; i < n; i++)
        want += v[i];
    j.v = v, j.n = n, j.partial = partial;
    for (int nt = 1; nt <= 64; nt *= 4) {
        pool_run(p, sum_task, &j, nt);
        double got = 0;
        for (int i = 0; i < nt; i++)
            got += partial[i];
        CHECK_NEAR(got, want, 0);
    }
    free(v);
    pool_run(p, count_task, &j, 0); /* no tasks: returns at once */
    pool_free(p);
    CHECK_EQ_INT(n_os_threads(), before);
}

/* Regions: each thread starts on its own contiguous run of tasks (thread t: the t-th of
 * pool_split(n, threads)), so the caller runs task 0 first and the worker task n/2 first. Tasks
 * sleep 1 ms so a worker woken late still finds its run untouched; retried against a slow host. */
typedef struct order_job {
    _Atomic int seq;
    int thread_of[8], seq_of[8];
} order_job;

static void order_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    order_job *j = ctx;
    j->seq_of[task] = atomic_fetch_add(&j->seq, 1);
    j->thread_of[task] = thread;
    usleep(1000);
}

static void test_regions(void) {
    char err[256];
    pool *p = pool_new(2, err, sizeof err);
    CHECK(p != NULL);
    int ok = 0;
    for (int attempt = 0; attempt < 5 && !ok; attempt++) {
        order_job j = {0};
        pool_run(p, order_task, &j, 8);
        /* region 0 = tasks 0..3 (caller), region 1 = 4..7 (worker) */
        ok = j.thread_of[0] == 0 && j.thread_of[4] == 1 && j.seq_of[0] < 2 && j.seq_of[4] < 2;
        for (int t = 1; t < 4; t++) /* each run's tasks start in order */
            ok = ok && j.seq_of[t] > j.seq_of[t - 1] && j.seq_of[4 + t] > j.seq_of[3 + t];
    }
    CHECK(ok);
    pool_free(p);
}

int main(void) {
    test_regions();
    int64_t lo, hi, total = 0, prev = 0;
    for (int i = 0; i < 7; i++) {
        pool_split(100, 7, i, &lo, &hi);
        CHECK_EQ_INT(lo, prev);
        CHECK(hi - lo == 14 || hi - lo == 15);
        total += hi - lo, prev = hi;
    }
    CHECK_EQ_INT(total, 100);
    pool_split(3, 5, 4, &lo, &hi);
    CHECK_EQ_INT(hi - lo, 0);
    run_pool(1, 100);
    run_pool(2, 20000);
    run_pool(4, 5000);                   /* more threads than cores */
    setenv("LFM2_POOL_SPIN_US", "0", 1); /* workers sleep right away: the wake-up path */
    run_pool(3, 3000);
    pool_free(NULL);
    char err[256];
    pool *p = pool_new(0, err, sizeof err); /* default: online cores */
    CHECK(p && pool_n_threads(p) == (int)sysconf(_SC_NPROCESSORS_ONLN));
    pool_free(p);
    CHECK_EQ_INT(pool_n_threads(NULL), 1);
    return check_done("test_pool");
}
