/* pool.h: persistent worker threads for the forward pass: parallel-for with one barrier per call.
 */
#ifndef LFM2_POOL_H
#define LFM2_POOL_H
#include <stddef.h>
#include <stdint.h>

typedef struct pool pool;

/* A task body: task in [0, n_tasks), thread in [0, pool_n_threads) (0 = the caller). */
typedef void (*pool_fn)(void *ctx, int task, int n_tasks, int thread);

/* Starts n_threads - 1 workers (n_threads <= 0: number of online cores; capped at 256); the
 * caller of pool_run is thread 0. Workers spin briefly after each run, then sleep on a condition
 * variable, so an idle pool costs nothing. NULL + message on failure. */
pool *pool_new(int n_threads, char *err, size_t errlen);
/* Joins the workers. NULL is a no-op. Must not be called while pool_run is running. */
void pool_free(pool *p);
int pool_n_threads(const pool *p); /* 1 for p == NULL */

/* Runs fn(ctx, i, n_tasks, thread) for every i in [0, n_tasks) across the threads and returns
 * when all are done: one barrier. The tasks are cut into one contiguous run per thread; a thread
 * runs its own in order, then claims what is left of the others' (so neighbouring tasks read
 * neighbouring memory on one thread, and no thread waits while work remains). p == NULL,
 * n_tasks == 1 or n_tasks >= 2^20 run inline. Not re-entrant: one caller at a time, and fn must
 * not call pool_run. */
void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks);

/* Splits [0, n) into n_parts near-equal contiguous ranges: part i is [*lo, *hi). */
void pool_split(int64_t n, int n_parts, int i, int64_t *lo, int64_t *hi);

#endif
