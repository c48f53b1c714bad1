/* test_metrics.c: Prometheus text of the server metrics: counters by status, gauges, histograms. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "server/metrics.h"
#include "tests/check.h"

/* The value on the line that starts with "name " (or "name{...} "), or -1. */
static double value_of(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, name, n) && p[n] == ' ') return atof(p + n + 1);
    }
    return -1;
}

int main(void) {
    metrics *m;
    CHECK_EQ_INT(metrics_new(&m), 0);
    metrics_count_request(m, 200);
    metrics_count_request(m, 200);
    metrics_count_request(m, 404);
    metrics_count_request(m, 499);
    metrics_add_tokens(m, 30, 12);
    metrics_add_tokens(m, 5, 0);
    metrics_set_queue_depth(m, 3);
    metrics_set_active(m, 7);
    metrics_set_kv_bytes(m, 123456789ull);
    metrics_set_ready(m, 1);
    metrics_observe_ttft(m, 0.003); /* bucket le=0.005 */
    metrics_observe_ttft(m, 0.2);   /* le=0.25 */
    metrics_observe_ttft(m, 100.0); /* only +Inf */
    for (int i = 0; i < 10; i++)
        metrics_observe_token(m, 0.001); /* le=0.001 exactly */
    CHECK_EQ_INT(metrics_gauge(m, "active"), 7);
    CHECK_EQ_INT(metrics_gauge(m, "queue"), 3);
    CHECK_EQ_INT(metrics_gauge(m, "nope"), -1);

    size_t len = 0;
    char *t = metrics_render(m, &len);
    CHECK(t != NULL);
    if (!t) return check_done("test_metrics");
    CHECK_EQ_INT(len, strlen(t));
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"200\"}"), 2, 0);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"404\"}"), 1, 0);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"499\"}"), 1, 0);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"500\"}"), -1, 0);
    CHECK_NEAR(value_of(t, "lfm2_prompt_tokens_total"), 35, 0);
    CHECK_NEAR(value_of(t, "lfm2_generated_tokens_total"), 12, 0);
    CHECK_NEAR(value_of(t, "lfm2_queue_depth"), 3, 0);
    CHECK_NEAR(value_of(t, "lfm2_active_sequences"), 7, 0);
    CHECK_NEAR(value_of(t, "lfm2_kv_memory_bytes"), 123456789.0, 0);
    CHECK_NEAR(value_of(t, "lfm2_model_ready"), 1, 0);
    /* cumulative buckets */
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_bucket{le=\"0.0025\"}"), 0, 0);
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_bucket{le=\"0.005\"}"), 1, 0);
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_bucket{le=\"0.1\"}"), 1, 0);
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_bucket{le=\"0.25\"}"), 2, 0);
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_bucket{le=\"30\"}"), 2, 0);
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_bucket{le=\"+Inf\"}"), 3, 0);
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_count"), 3, 0);
    CHECK_NEAR(value_of(t, "lfm2_time_to_first_token_seconds_sum"), 100.203, 1e-6);
    CHECK_NEAR(value_of(t, "lfm2_token_latency_seconds_bucket{le=\"0.001\"}"), 10, 0);
    CHECK_NEAR(value_of(t, "lfm2_token_latency_seconds_count"), 10, 0);
    /* every metric family has HELP and TYPE lines */
    CHECK(strstr(t, "# TYPE lfm2_requests_total counter\n") != NULL);
    CHECK(strstr(t, "# TYPE lfm2_active_sequences gauge\n") != NULL);
    CHECK(strstr(t, "# TYPE lfm2_token_latency_seconds histogram\n") != NULL);
    CHECK(t[len - 1] == '\n');
    free(t);

    /* many distinct statuses: the table keeps the first 32 it saw (200, 404, 499, then 100..128)
     * and drops the others, while the statuses already in it go on counting */
    for (int s = 100; s < 200; s++)
        metrics_count_request(m, s);
    metrics_count_request(m, 200);
    metrics_count_request(m, 128);
    t = metrics_render(m, NULL);
    CHECK(t != NULL);
    if (!t) return check_done("test_metrics");
    int n_lines = 0;
    for (const char *p = t; (p = strstr(p, "\nlfm2_requests_total{")) != NULL; p++)
        n_lines++;
    CHECK_EQ_INT(n_lines, 32);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"200\"}"), 3, 0);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"100\"}"), 1, 0);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"128\"}"), 2, 0);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"129\"}"), -1, 0);
    CHECK_NEAR(value_of(t, "lfm2_requests_total{status=\"199\"}"), -1, 0);
    free(t);
    metrics_free(m);
    metrics_free(NULL);
    return check_done("test_metrics");
}
