/* metrics.h: the server's counters, gauges and latency histograms, rendered as Prometheus text. */
#ifndef LFM2_METRICS_H
#define LFM2_METRICS_H
#include <stddef.h>
#include <stdint.h>

/* Thread-safe: every call takes the registry's lock, so the HTTP loop and the scheduler thread
 * may both record into one registry. */
typedef struct metrics metrics;

int metrics_new(metrics **out);
void metrics_free(metrics *m); /* NULL is a no-op */

void metrics_count_request(metrics *m, int http_status); /* one finished HTTP request */
void metrics_add_tokens(metrics *m, long n_prompt, long n_generated);
void metrics_set_queue_depth(metrics *m, int n);        /* requests waiting for the batch */
void metrics_set_active(metrics *m, int n);             /* sequences alive in the engine */
void metrics_set_kv_bytes(metrics *m, uint64_t bytes);  /* engine state memory in use */
void metrics_set_ready(metrics *m, int ready);          /* 1 once the model is loaded */
void metrics_observe_ttft(metrics *m, double seconds);  /* submit -> first generated token */
void metrics_observe_token(metrics *m, double seconds); /* gap between two tokens of a stream */

/* The prompt cache's counters (server/pcache.h), set as a whole by the scheduler thread. */
typedef struct metrics_cache {
    uint64_t hits;                                  /* requests that reused a prefix */
    uint64_t miss_no_entry, miss_evicted, miss_disabled; /* requests that reused nothing, why */
    uint64_t rewrites;      /* reuse stopped at an assistant turn the template rewrote */
    uint64_t tokens_reused; /* prompt tokens restored instead of prefilled */
    uint64_t evictions;     /* entries dropped for room */
    uint64_t bytes, entries; /* held now */
} metrics_cache;
void metrics_set_cache(metrics *m, const metrics_cache *c);

/* Reads one gauge back (for tests and /health): "active", "queue"; -1 for an unknown name. */
long metrics_gauge(metrics *m, const char *name);

/* Renders the Prometheus text exposition (format 0.0.4) into a malloc'd string the caller frees;
 * NULL when out of memory. */
char *metrics_render(metrics *m, size_t *len);

#endif
