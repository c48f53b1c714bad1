/* metrics.c: Prometheus counters, gauges and histograms for the server, behind one mutex. */
#include "server/metrics.h"
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_STATUS 32
#define METRICS_N_BUCKETS 14

/* Upper bounds of the latency buckets, seconds (the +Inf bucket is implicit). */
static const double metrics_bounds[METRICS_N_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

typedef struct metrics_hist {
    uint64_t bucket[METRICS_N_BUCKETS + 1]; /* non-cumulative counts; last = +Inf */
    uint64_t count;
    double sum; /* seconds */
} metrics_hist;

struct metrics {
    pthread_mutex_t mu;
    int status_code[METRICS_MAX_STATUS]; /* distinct HTTP statuses seen, in first-seen order */
    uint64_t status_count[METRICS_MAX_STATUS];
    int n_status;
    uint64_t prompt_tokens, generated_tokens;
    long queue_depth, active;
    uint64_t kv_bytes;
    int ready;
    metrics_hist ttft, token;
    metrics_cache cache;
    int has_cache; /* the prompt cache's lines are rendered once it reported */
};

int metrics_new(metrics **out) {
    metrics *m = calloc(1, sizeof *m);
    if (!m) return -1;
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return 0;
}

void metrics_free(metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_count_request(metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_status && m->status_code[i] != status)
        i++;
    if (i == m->n_status && m->n_status < METRICS_MAX_STATUS)
        m->status_code[m->n_status++] = status;
    if (i < m->n_status) m->status_count[i]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_add_tokens(metrics *m, long n_prompt, long n_generated) {
    pthread_mutex_lock(&m->mu);
    if (n_prompt > 0) m->prompt_tokens += (uint64_t)n_prompt;
    if (n_generated > 0) m->generated_tokens += (uint64_t)n_generated;
    pthread_mutex_unlock(&m->mu);
}

#define METRICS_SETTER(fn, field, type)                                                            \
    void fn(metrics *m, type v) {                                                                  \
        pthread_mutex_lock(&m->mu);                                                                \
        m->field = v;                                                                              \
        pthread_mutex_unlock(&m->mu);                                                              \
    }
METRICS_SETTER(metrics_set_queue_depth, queue_depth, int)
METRICS_SETTER(metrics_set_active, active, int)
METRICS_SETTER(metrics_set_kv_bytes, kv_bytes, uint64_t)
METRICS_SETTER(metrics_set_ready, ready, int)

void metrics_set_cache(metrics *m, const metrics_cache *c) {
    pthread_mutex_lock(&m->mu);
    m->cache = *c;
    m->has_cache = 1;
    pthread_mutex_unlock(&m->mu);
}

static void hist_observe(metrics_hist *h, double s) {
    int b = 0;
    while (b < METRICS_N_BUCKETS && s > metrics_bounds[b])
        b++;
    h->bucket[b]++;
    h->count++;
    h->sum += s;
}

void metrics_observe_ttft(metrics *m, double s) {
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->ttft, s);
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_token(metrics *m, double s) {
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->token, s);
    pthread_mutex_unlock(&m->mu);
}

long metrics_gauge(metrics *m, const char *name) {
    long v = -1;
    pthread_mutex_lock(&m->mu);
    if (!strcmp(name, "active"))
        v = m->active;
    else if (!strcmp(name, "queue"))
        v = m->queue_depth;
    pthread_mutex_unlock(&m->mu);
    return v;
}

/* A growing text buffer; on allocation failure it stays failed and render returns NULL. */
typedef struct mbuf {
    char *p;
    size_t len, cap;
    int failed;
} mbuf;

static void mb_printf(mbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 256;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void render_hist(mbuf *b, const char *name, const char *help, const metrics_hist *h) {
    mb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_N_BUCKETS; i++) {
        cum += h->bucket[i];
        mb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, metrics_bounds[i],
                  (unsigned long long)cum);
    }
    cum += h->bucket[METRICS_N_BUCKETS];
    mb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    mb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

char *metrics_render(metrics *m, size_t *len) {
    mbuf b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return NULL;
    b.p[0] = 0;
    pthread_mutex_lock(&m->mu);
    mb_printf(&b, "# HELP lfm2_requests_total HTTP requests answered, by status code.\n"
                  "# TYPE lfm2_requests_total counter\n");
    for (int i = 0; i < m->n_status; i++)
        mb_printf(&b, "lfm2_requests_total{status=\"%d\"} %llu\n", m->status_code[i],
                  (unsigned long long)m->status_count[i]);
    mb_printf(&b,
              "# HELP lfm2_prompt_tokens_total Prompt tokens processed.\n"
              "# TYPE lfm2_prompt_tokens_total counter\nlfm2_prompt_tokens_total %llu\n"
              "# HELP lfm2_generated_tokens_total Tokens generated.\n"
              "# TYPE lfm2_generated_tokens_total counter\nlfm2_generated_tokens_total %llu\n"
              "# HELP lfm2_queue_depth Requests waiting to join the batch.\n"
              "# TYPE lfm2_queue_depth gauge\nlfm2_queue_depth %ld\n"
              "# HELP lfm2_active_sequences Sequences alive in the engine.\n"
              "# TYPE lfm2_active_sequences gauge\nlfm2_active_sequences %ld\n"
              "# HELP lfm2_kv_memory_bytes Engine state (KV cache and conv state) in use, bytes.\n"
              "# TYPE lfm2_kv_memory_bytes gauge\nlfm2_kv_memory_bytes %llu\n"
              "# HELP lfm2_model_ready 1 once the model is loaded.\n"
              "# TYPE lfm2_model_ready gauge\nlfm2_model_ready %d\n",
              (unsigned long long)m->prompt_tokens, (unsigned long long)m->generated_tokens,
              m->queue_depth, m->active, (unsigned long long)m->kv_bytes, m->ready);
    if (m->has_cache) {
        const metrics_cache *c = &m->cache;
        mb_printf(&b,
                  "# HELP lfm2_prompt_cache_hits_total Requests that resumed from the prompt cache.\n"
                  "# TYPE lfm2_prompt_cache_hits_total counter\nlfm2_prompt_cache_hits_total %llu\n"
                  "# HELP lfm2_prompt_cache_misses_total Requests that reused nothing, by reason.\n"
                  "# TYPE lfm2_prompt_cache_misses_total counter\n"
                  "lfm2_prompt_cache_misses_total{reason=\"no_entry\"} %llu\n"
                  "lfm2_prompt_cache_misses_total{reason=\"evicted\"} %llu\n"
                  "lfm2_prompt_cache_misses_total{reason=\"disabled\"} %llu\n"
                  "# HELP lfm2_prompt_cache_template_rewrites_total Requests whose reuse stopped "
                  "at an assistant turn the chat template rewrote (earlier <think> dropped).\n"
                  "# TYPE lfm2_prompt_cache_template_rewrites_total counter\n"
                  "lfm2_prompt_cache_template_rewrites_total %llu\n"
                  "# HELP lfm2_prompt_cache_tokens_reused_total Prompt tokens restored instead of "
                  "prefilled.\n"
                  "# TYPE lfm2_prompt_cache_tokens_reused_total counter\n"
                  "lfm2_prompt_cache_tokens_reused_total %llu\n"
                  "# HELP lfm2_prompt_cache_evictions_total Entries dropped to stay in budget.\n"
                  "# TYPE lfm2_prompt_cache_evictions_total counter\n"
                  "lfm2_prompt_cache_evictions_total %llu\n"
                  "# HELP lfm2_prompt_cache_bytes Host memory held by the prompt cache.\n"
                  "# TYPE lfm2_prompt_cache_bytes gauge\nlfm2_prompt_cache_bytes %llu\n"
                  "# HELP lfm2_prompt_cache_entries Sequences held by the prompt cache.\n"
                  "# TYPE lfm2_prompt_cache_entries gauge\nlfm2_prompt_cache_entries %llu\n",
                  (unsigned long long)c->hits, (unsigned long long)c->miss_no_entry,
                  (unsigned long long)c->miss_evicted, (unsigned long long)c->miss_disabled,
                  (unsigned long long)c->rewrites, (unsigned long long)c->tokens_reused,
                  (unsigned long long)c->evictions, (unsigned long long)c->bytes,
                  (unsigned long long)c->entries);
    }
    render_hist(&b, "lfm2_time_to_first_token_seconds",
                "Time from a request joining the queue to its first generated token.", &m->ttft);
    render_hist(&b, "lfm2_token_latency_seconds", "Time between consecutive generated tokens.",
                &m->token);
    pthread_mutex_unlock(&m->mu);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}
