/* http.c: OpenAI-compatible endpoints on libmicrohttpd (external epoll mode) driven by libuv.
 *
 * Design: MHD runs without threads of its own. Its epoll fd is watched by a uv_poll, its timeout
 * by a uv_timer, so every MHD callback runs on the loop thread. The scheduler thread reports
 * through sched_poll + a uv_async; a request waiting for tokens is a suspended MHD connection that
 * the async callback resumes. MHD does not notice a client closing a suspended connection, so a
 * 200 ms tick peeks at those sockets and cancels the job of a peer that is gone. */
#include "server/http.h"
#include <errno.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <netdb.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include "api/chat.h"
#include "api/request.h"
#include "api/response.h"
#include "engine/clock.h"
#include "engine/eng.h"
#include "engine/rng.h"
#include "server/job.h"
#include "server/metrics.h"
#include "server/sched.h"

enum route {
    R_NONE = 0,
    R_CHAT,
    R_COMPL,
    R_MODELS,
    R_HEALTH,
    R_METRICS,
    R_TOKENIZE,
    R_DETOKENIZE,
};

typedef struct server server;

typedef struct hreq {
    struct hreq *next, *prev;
    server *srv;
    struct MHD_Connection *conn;
    int fd;
    int route;
    double t_start;
    /* body */
    char *body;
    size_t len, cap;
    bool too_big, handled;
    /* connection state */
    bool suspended, gone, queued;
    int status;
    /* job state */
    uint64_t job;
    job_answer ans;
    /* streamed bytes waiting for MHD */
    char *out;
    size_t out_len, out_off, out_cap;
    bool out_end;    /* nothing follows what is in out */
    bool out_broken; /* an event could not be queued: end with an error once out is sent */
    double last_write;
} hreq;

struct server {
    http_opts o;
    uv_loop_t loop;
    uv_poll_t poll;
    uv_timer_t mhd_timer, tick;
    uv_async_t wake;
    uv_signal_t sigint, sigterm;
    uv_work_t load;
    struct MHD_Daemon *d;
    bool loopback;
    eng *e;
    const tok *tk;
    sched *s;
    metrics *m;
    bool ready, loading, stopping, draining, aborted;
    int rc;
    char err[512];
    double drain_deadline, abort_deadline;
    hreq *reqs;
    api_limits lim;
    char model_id[256];
    job_ctx jc; /* tokenizer, chat format (from tokenizer.chat_template), n_vocab: set at load */
    long long created;
    uint64_t rng;
};

static void logf_(server *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(server *sv, const char *fmt, ...) {
    if (!sv->o.log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sv->o.log(sv->o.log_ud, line);
}

void http_opts_default(http_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->parallel = 4;
    o->queue_max = 64;
    o->prefill_chunk = 256;
    o->max_body = 1 << 20;
    o->max_header = 32 << 10;
    o->max_conns = 256;
    o->idle_timeout_s = 60;
    o->keepalive_ms = 5000;
    o->drain_ms = 30000;
    o->max_tokens = 32768;
    o->max_n = 8;
}

/* ---------- responses ---------- */

/* The Access-Control-Allow-Origin value for this request, or NULL (no CORS headers). */
static const char *cors_origin(hreq *r) {
    const char *allow = r->srv->o.cors;
    if (!allow || !*allow) return NULL;
    if (!strcmp(allow, "*")) return "*";
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin || !*origin) return NULL;
    size_t ol = strlen(origin);
    for (const char *p = allow; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == ol && !strncmp(p, origin, ol)) return origin;
        p = e;
    }
    return NULL;
}

static void add_common_headers(hreq *r, struct MHD_Response *resp) {
    const char *origin = cors_origin(r);
    if (!origin) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After");
    if (strcmp(origin, "*")) MHD_add_response_header(resp, "Vary", "Origin");
}

/* Queues a complete response (body copied); ctype NULL = application/json. */
static enum MHD_Result send_body(hreq *r, unsigned status, const char *body, size_t len,
                                 const char *ctype, const char *h1, const char *v1) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    add_common_headers(r, resp);
    MHD_add_response_header(resp, "Content-Type", ctype ? ctype : "application/json");
    if (h1) MHD_add_response_header(resp, h1, v1);
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->queued = true;
    r->status = (int)status;
    return rc;
}

static enum MHD_Result send_json(hreq *r, unsigned status, char *json) {
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                              "\"server_error\",\"param\":null,\"code\":null}}";
    if (!json) return send_body(r, 500, oom, sizeof oom - 1, NULL, NULL, NULL);
    enum MHD_Result rc = send_body(r, status, json, strlen(json), NULL, NULL, NULL);
    free(json);
    return rc;
}

static enum MHD_Result send_api_error(hreq *r, const api_error *e, const char *h1, const char *v1) {
    char *json = api_error_json(e);
    if (!json) return send_json(r, 500, NULL);
    enum MHD_Result rc = send_body(r, (unsigned)e->status, json, strlen(json), NULL, h1, v1);
    free(json);
    return rc;
}

static enum MHD_Result send_error(hreq *r, int status, const char *type, const char *param,
                                  const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_error(hreq *r, int status, const char *type, const char *param,
                                  const char *code, const char *fmt, ...) {
    api_error e = {0};
    e.status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    snprintf(e.type, sizeof e.type, "%s", type);
    snprintf(e.param, sizeof e.param, "%s", param ? param : "");
    snprintf(e.code, sizeof e.code, "%s", code ? code : "");
    return send_api_error(r, &e, status == 503 ? "Retry-After" : NULL, "1");
}

/* ---------- request list ---------- */

static void hreq_free(hreq *r) {
    if (!r) return;
    job_answer_free(&r->ans);
    free(r->body);
    free(r->out);
    free(r);
}

static void suspend(hreq *r) {
    if (!r->suspended) {
        r->suspended = true;
        MHD_suspend_connection(r->conn);
    }
}

static void resume(hreq *r) {
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
}

static void run_mhd(server *sv);

/* ---------- streaming ---------- */

/* Appends the n bytes at each of parts[0..k) to the stream's unsent bytes, all or none: -1 when
 * out of memory. Before the buffer grows, the bytes already sent are dropped, so a slow reader's
 * buffer holds only what it has not read yet; an append that fits moves nothing. */
static int out_append_parts(hreq *r, const char *const *parts, const size_t *lens, int k) {
    size_t n = 0;
    for (int i = 0; i < k; i++)
        n += lens[i];
    if (r->out_off == r->out_len) r->out_off = r->out_len = 0;
    if (r->out_len + n > r->out_cap && r->out_off) {
        memmove(r->out, r->out + r->out_off, r->out_len - r->out_off);
        r->out_len -= r->out_off;
        r->out_off = 0;
    }
    if (r->out_len + n > r->out_cap) {
        size_t cap = (r->out_len + n) * 2 + 256;
        char *p = realloc(r->out, cap);
        if (!p) return -1;
        r->out = p;
        r->out_cap = cap;
    }
    for (int i = 0; i < k; i++) {
        memcpy(r->out + r->out_len, parts[i], lens[i]);
        r->out_len += lens[i];
    }
    return 0;
}

static int out_append(hreq *r, const char *s, size_t n) {
    return out_append_parts(r, &s, &n, 1);
}

/* job_emit_fn: appends one SSE event, "data: <data>\n\n", whole or not at all; an event that
 * cannot be queued ends the stream with an error (the client sees a cut stream, never a
 * malformed or silently shortened one). */
static void out_event(void *ud, const char *data, size_t len) {
    hreq *r = ud;
    if (r->out_broken) return; /* nothing may follow a lost event */
    const char *parts[3] = {"data: ", data, "\n\n"};
    const size_t lens[3] = {6, len, 2};
    if (out_append_parts(r, parts, lens, 3) < 0) r->out_broken = true;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    hreq *r = cls;
    if (r->gone) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (r->out_broken && r->out_off == r->out_len) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (r->out_off < r->out_len) {
        size_t n = r->out_len - r->out_off;
        if (n > max) n = max;
        memcpy(buf, r->out + r->out_off, n);
        r->out_off += n;
        r->last_write = clock_now_s();
        return (ssize_t)n;
    }
    if (r->out_end) return MHD_CONTENT_READER_END_OF_STREAM;
    suspend(r);
    return 0;
}

static enum MHD_Result start_stream(hreq *r) {
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, r, NULL);
    if (!resp) return MHD_NO;
    add_common_headers(r, resp);
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result rc = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    r->queued = true;
    r->status = 200;
    r->last_write = clock_now_s();
    return rc;
}

/* ---------- completions: events from the scheduler ---------- */

static void on_event(hreq *r, sched_event *ev) {
    job_answer_event(&r->ans, ev, out_event, r);
    if (ev->kind == SCHED_EV_DONE)
        logf_(r->srv, "%s: prompt %d tokens (cached %d, new %d), generated %d", r->ans.id,
              ev->n_prompt, ev->n_cached, ev->n_prompt - ev->n_cached, ev->n_completion);
    if (ev->kind == SCHED_EV_DONE && r->ans.stream && r->ans.started) r->out_end = true;
    /* An answer that failed here (out of memory building it, an event that could not be queued)
     * needs nothing more from its job: cancel it and end the answer now. A scheduler ERROR is
     * followed by its DONE instead. */
    if ((r->ans.failed || r->out_broken) && !r->ans.done && ev->kind != SCHED_EV_ERROR) {
        sched_cancel(r->srv->s, r->job);
        r->ans.done = true; /* the answer is final: the completion callback cancels no more */
        if (r->ans.stream && r->ans.started) r->out_end = true;
    }
}

/* The non-streamed answer (or an error that came before any byte was sent). */
static enum MHD_Result send_final(hreq *r) {
    if (r->ans.failed) {
        bool shutting = r->srv->draining;
        return send_error(r, shutting ? 503 : 500, "server_error", NULL, NULL, "%s", r->ans.errmsg);
    }
    return send_json(r, 200, job_answer_json(&r->ans));
}

static hreq *find_job(server *sv, uint64_t id) {
    for (hreq *r = sv->reqs; r; r = r->next)
        if (r->job == id) return r;
    return NULL;
}

static void on_wake(uv_async_t *h) {
    server *sv = h->data;
    if (!sv->s) return;
    sched_event evs[64];
    int n;
    while ((n = sched_poll(sv->s, evs, 64)) > 0) {
        for (int i = 0; i < n; i++) {
            hreq *r = find_job(sv, evs[i].job);
            if (r) {
                on_event(r, &evs[i]);
                if (r->ans.stream ? (r->ans.started &&
                                     (r->out_len > r->out_off || r->out_end || !r->queued)) ||
                                        r->ans.done
                                  : r->ans.done)
                    resume(r);
            }
            sched_event_clear(&evs[i]);
        }
    }
    run_mhd(sv);
}

static void sched_notify(void *ud) {
    uv_async_send((uv_async_t *)ud);
}

/* ---------- handlers ---------- */

static enum MHD_Result handle_completion(hreq *r) {
    server *sv = r->srv;
    api_request q = {0};
    api_error e = {0};
    enum api_kind kind = r->route == R_CHAT ? API_CHAT : API_COMPLETION;
    if (api_request_parse(&q, kind, r->body ? r->body : "", r->len, &sv->lim, &e) < 0) {
        api_request_free(&q);
        return send_api_error(r, &e, NULL, NULL);
    }
    sched_job *j;
    if (job_build(&sv->jc, &q, rng_splitmix64(&sv->rng), &j, &e) < 0) {
        api_request_free(&q);
        return send_api_error(r, &e, NULL, NULL);
    }
    char id[64];
    api_make_id(id, sizeof id, kind == API_CHAT ? "chatcmpl-" : "cmpl-", rng_splitmix64(&sv->rng),
                rng_splitmix64(&sv->rng));
    int arc = job_answer_init(&r->ans, &q, sv->tk, id, sv->created, sv->model_id);
    r->ans.start_reasoning = kind == API_CHAT && sv->jc.chat_think_open;
    api_request_free(&q);
    if (arc < 0) {
        sched_job_free(j);
        return send_json(r, 500, NULL);
    }
    char err[256];
    int rc = sched_submit(sv->s, j, &r->job, err, sizeof err);
    if (rc == SCHED_EFULL || rc == SCHED_ESTOP)
        return send_error(r, 503, "server_error", NULL, rc == SCHED_EFULL ? "queue_full" : NULL,
                          "%s", err);
    if (rc == SCHED_ECTX)
        return send_error(r, 400, "invalid_request_error", kind == API_CHAT ? "messages" : "prompt",
                          "context_length_exceeded", "%s", err);
    if (rc == SCHED_EINVAL)
        return send_error(r, 400, "invalid_request_error", "n", "invalid_value", "%s", err);
    if (rc < 0) return send_error(r, 500, "server_error", NULL, NULL, "%s", err);
    suspend(r);
    return MHD_YES;
}

static enum MHD_Result handle_tokenize(hreq *r) {
    server *sv = r->srv;
    api_tokenize_req q = {0};
    api_error e = {0};
    if (api_tokenize_parse(&q, r->body ? r->body : "", r->len, &e) < 0) {
        api_tokenize_free(&q);
        return send_api_error(r, &e, NULL, NULL);
    }
    int32_t *ids;
    int n;
    int rc = job_tokenize(sv->tk, q.content, q.len, q.add_special && tok_add_bos(sv->tk),
                          q.parse_special, &ids, &n);
    char *json = NULL;
    if (rc == 0) {
        if (q.with_pieces) {
            const char **pieces = calloc((size_t)n + 1, sizeof *pieces);
            size_t *lens = calloc((size_t)n + 1, sizeof *lens);
            if (pieces && lens) {
                for (int i = 0; i < n; i++) {
                    pieces[i] = tok_piece(sv->tk, ids[i], &lens[i]);
                    if (!pieces[i]) pieces[i] = "", lens[i] = 0;
                }
                json = api_tokenize_json(ids, n, pieces, lens);
            }
            free(pieces);
            free(lens);
        } else {
            json = api_tokenize_json(ids, n, NULL, NULL);
        }
    }
    free(ids);
    api_tokenize_free(&q);
    return send_json(r, 200, json);
}

static enum MHD_Result handle_detokenize(hreq *r) {
    server *sv = r->srv;
    api_detokenize_req q = {0};
    api_error e = {0};
    if (api_detokenize_parse(&q, r->body ? r->body : "", r->len, &sv->lim, &e) < 0) {
        api_detokenize_free(&q);
        return send_api_error(r, &e, NULL, NULL);
    }
    size_t need = tok_decode(sv->tk, q.tokens, q.n_tokens, true, NULL, 0);
    char *text = malloc(need + 1);
    char *json = NULL;
    if (text) {
        tok_decode(sv->tk, q.tokens, q.n_tokens, true, text, need + 1);
        json = api_detokenize_json(text, need);
    }
    free(text);
    api_detokenize_free(&q);
    return send_json(r, 200, json);
}

/* ---------- routing, checks ---------- */

static int route_of(const char *url) {
    static const struct {
        const char *path;
        int route;
    } t[] = {{"/v1/chat/completions", R_CHAT},
             {"/chat/completions", R_CHAT},
             {"/v1/completions", R_COMPL},
             {"/completions", R_COMPL},
             {"/v1/models", R_MODELS},
             {"/models", R_MODELS},
             {"/health", R_HEALTH},
             {"/v1/health", R_HEALTH},
             {"/metrics", R_METRICS},
             {"/tokenize", R_TOKENIZE},
             {"/detokenize", R_DETOKENIZE}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(url, t[i].path)) return t[i].route;
    return R_NONE;
}

static bool route_is_post(int route) {
    return route == R_CHAT || route == R_COMPL || route == R_TOKENIZE || route == R_DETOKENIZE;
}

/* Host header check for loopback binds (DNS rebinding): localhost, 127.0.0.1, [::1], any port. */
static bool host_ok(const char *host) {
    if (!host) return true; /* HTTP/1.0 without Host: not a browser */
    static const char *const names[] = {"localhost", "127.0.0.1", "[::1]"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(names[i]);
        if (strncasecmp(host, names[i], n)) continue;
        const char *p = host + n;
        if (!*p) return true;
        if (*p != ':' || !p[1]) continue;
        for (p++; *p; p++)
            if (*p < '0' || *p > '9') break;
        if (!*p && strlen(host + n + 1) <= 5) return true;
    }
    return false;
}

/* Constant-time comparison of the Bearer token with the key (time depends on lengths only). */
static bool key_ok(const char *auth, const char *key) {
    if (!auth || strncasecmp(auth, "Bearer ", 7)) return false;
    const char *given = auth + 7;
    while (*given == ' ')
        given++;
    size_t gl = strlen(given), kl = strlen(key);
    unsigned char diff = (unsigned char)(gl != kl);
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)(key[i] ^ given[i < gl ? i : 0]);
    return diff == 0;
}

static enum MHD_Result handle_get(hreq *r) {
    server *sv = r->srv;
    if (r->route == R_HEALTH) {
        if (sv->ready) return send_body(r, 200, "{\"status\":\"ok\"}", 15, NULL, NULL, NULL);
        return send_error(r, 503, "unavailable_error", NULL, "loading", "Loading model");
    }
    if (r->route == R_METRICS) {
        size_t len = 0;
        char *text = metrics_render(sv->m, &len);
        if (!text) return send_json(r, 500, NULL);
        enum MHD_Result rc = send_body(r, 200, text, len, "text/plain; version=0.0.4", NULL, NULL);
        free(text);
        return rc;
    }
    /* R_MODELS */
    return send_json(r, 200, api_models_json(sv->model_id, sv->created, "lfm2"));
}

/* Headers checked against RFC 9110 5.1 and 5.5: a name is a token, a value holds visible
 * characters, obs-text (bytes >= 0x80), spaces and tabs; no other control byte (NUL, a bare CR,
 * DEL...). libmicrohttpd 0.9.75 passes them through, and a NUL cuts a value short for every
 * lookup ("Host: localhost\0.evil" reads as "localhost"). It parses the header block in place,
 * turning each line end (CR LF or LF) into NULs, so a line cut by a NUL shows as a line that goes
 * on: anything but one or two NULs between the end of the request line or a value and the next
 * header's name, or, after the last value, anything but the NULs of its line end and the empty
 * line. */
typedef struct header_scan {
    const char *bad; /* what is wrong, NULL while all is well */
    const char *end; /* one past the request line or the previous value */
    size_t span;     /* the connection's memory limit: pointers farther apart are not one block */
    int n;           /* headers seen */
    bool crlf;       /* the last line end seen was CR LF */
} header_scan;

/* Is value where the parse leaves it, right after its name, the colon and optional whitespace?
 * libmicrohttpd copies the value of a line continued on the next one (obs-fold) elsewhere. */
static bool value_in_place(const char *key, size_t key_size, const char *value) {
    uintptr_t a = (uintptr_t)(key + key_size), v = (uintptr_t)value;
    if (v <= a || v - a > 256) return false;
    for (const char *p = key + key_size; p < value; p++)
        if (*p && *p != ':' && *p != ' ' && *p != '\t') return false;
    return true;
}

static enum MHD_Result header_check(void *cls, enum MHD_ValueKind kind, const char *key,
                                    size_t key_size, const char *value, size_t value_size) {
    (void)kind;
    header_scan *hs = cls;
    static const char seps[] = "\"(),/:;<=>?@[\\]{}";
    if (!value_in_place(key, key_size, value)) { /* RFC 9112 5.2 lets a server refuse it */
        hs->bad = "a header line continues on the next line (obs-fold)";
        return MHD_NO;
    }
    uintptr_t k = (uintptr_t)key, end = (uintptr_t)hs->end; /* may be unrelated pointers */
    if (k > end && k - end <= hs->span) {
        size_t gap = (size_t)(k - end);
        if (gap > 2 || hs->end[0] || hs->end[gap - 1]) {
            hs->bad = "a header line holds a NUL byte";
            return MHD_NO;
        }
        hs->crlf = gap == 2;
    }
    for (size_t i = 0; i < key_size; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= 0x20 || c >= 0x7f || strchr(seps, c)) {
            hs->bad = "a header name holds a byte other than letters, digits and !#$%&'*+-.^_`|~";
            return MHD_NO;
        }
    }
    for (size_t i = 0; i < value_size; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            hs->bad = c == 0      ? "a header value holds a NUL byte"
                      : c == '\r' ? "a header value holds a bare CR"
                                  : "a header value holds a control character";
            return MHD_NO;
        }
    }
    hs->end = value + value_size;
    hs->n++;
    return MHD_YES;
}

/* NULL, or what makes the request's header block one RFC 9110 forbids. version is the one MHD
 * gives the access handler (it points into the parsed block). */
static const char *headers_bad(struct MHD_Connection *c, const char *version, size_t span) {
    header_scan hs = {.end = version + strlen(version), .span = span};
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, header_check, &hs);
    /* the last value: its line end and the empty line, NULs both (4 bytes when framed by CR LF).
     * Two NULs and then text after a CR LF framed line look the same whether a NUL cut the last
     * value or the block switched to bare LF for its last lines: both are refused, saying so. */
    if (!hs.bad && hs.n && (hs.end[0] || hs.end[1]))
        hs.bad = "a header line holds a NUL byte";
    else if (!hs.bad && hs.n && hs.crlf && hs.end[2])
        hs.bad = "a header line holds a NUL byte, or the header block mixes CR LF and bare LF";
    return hs.bad;
}

/* The first call for a request: everything decidable from the request line and headers. Returns
 * true when a response has been queued. */
static bool first_checks(hreq *r, const char *url, const char *method, const char *version,
                         enum MHD_Result *res) {
    server *sv = r->srv;
    struct MHD_Connection *c = r->conn;
    const char *bad = headers_bad(c, version, sv->o.max_header);
    if (bad) {
        *res = send_error(r, 400, "invalid_request_error", NULL, "invalid_header",
                          "%s (RFC 9110 allows visible characters, spaces and tabs)", bad);
        return true;
    }
    if (!strcmp(version, MHD_HTTP_VERSION_1_1) &&
        !MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host")) {
        *res = send_error(r, 400, "invalid_request_error", NULL, "missing_host",
                          "HTTP/1.1 requests need a Host header");
        return true;
    }
    if (sv->loopback && !host_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host"))) {
        *res = send_error(r, 403, "invalid_request_error", NULL, "invalid_host",
                          "Host header not allowed on a loopback server (DNS rebinding guard)");
        return true;
    }
    r->route = route_of(url);
    if (!strcmp(method, "OPTIONS")) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!resp) {
            *res = MHD_NO;
            return true;
        }
        add_common_headers(r, resp);
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, OpenAI-Organization, "
                                "OpenAI-Project, X-Stainless-Lang, X-Stainless-Package-Version");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
        *res = MHD_queue_response(c, 204, resp);
        MHD_destroy_response(resp);
        r->queued = true;
        r->status = 204;
        return true;
    }
    if (r->route == R_NONE) {
        *res = send_error(r, 404, "invalid_request_error", NULL, "not_found", "Unknown path %.200s",
                          url);
        return true;
    }
    bool post = route_is_post(r->route);
    if (strcmp(method, post ? "POST" : "GET") && !(!post && !strcmp(method, "HEAD"))) {
        static const char msg[] =
            "{\"error\":{\"message\":\"method not allowed\",\"type\":"
            "\"invalid_request_error\",\"param\":null,\"code\":\"method_not_allowed\"}}";
        *res = send_body(r, 405, msg, sizeof msg - 1, NULL, "Allow",
                         post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
        return true;
    }
    if (sv->o.api_key && *sv->o.api_key && r->route != R_HEALTH &&
        !key_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"), sv->o.api_key)) {
        *res = send_error(r, 401, "authentication_error", NULL, "invalid_api_key",
                          "Invalid or missing API key (send Authorization: Bearer KEY)");
        return true;
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        /* A body somewhat over the limit is read and dropped before the 413, so a client still
         * uploading sees the answer instead of a reset; a far larger one is refused at once. */
        if (errno || end == cl || *end || v > 16 * (unsigned long long)sv->o.max_body + 65536) {
            *res = send_error(r, 413, "invalid_request_error", NULL, "body_too_large",
                              "request body is larger than the limit of %zu bytes", sv->o.max_body);
            return true;
        }
        if (v > sv->o.max_body) r->too_big = true;
    }
    if (!post) {
        *res = handle_get(r);
        return true;
    }
    if (!sv->ready && r->route != R_NONE) {
        *res = send_error(r, 503, "unavailable_error", NULL, "loading",
                          "the model is still loading; retry shortly");
        return true;
    }
    return false;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls) {
    server *sv = cls;
    hreq *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = sv;
        r->conn = c;
        r->t_start = clock_now_s();
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        r->fd = ci ? ci->connect_fd : -1;
        r->next = sv->reqs;
        if (sv->reqs) sv->reqs->prev = r;
        sv->reqs = r;
        *con_cls = r;
        enum MHD_Result res = MHD_YES;
        if (first_checks(r, url, method, version, &res)) r->handled = true;
        return res;
    }
    if (r->handled) {
        if (*upload_size) { /* body of a request already answered: discard it */
            *upload_size = 0;
            return MHD_YES;
        }
        if (r->gone) return MHD_NO;
        if (r->queued) return MHD_YES;
        /* resumed: a job is waiting for us */
        if (r->ans.stream && r->ans.started) return start_stream(r);
        if (r->ans.done) return send_final(r);
        suspend(r);
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->too_big || r->len + *upload_size > sv->o.max_body) {
            r->too_big = true;
        } else {
            if (r->len + *upload_size + 1 > r->cap) {
                size_t cap = (r->len + *upload_size + 1) * 2;
                if (cap > sv->o.max_body + 1) cap = sv->o.max_body + 1;
                char *p = realloc(r->body, cap);
                if (!p) return MHD_NO;
                r->body = p;
                r->cap = cap;
            }
            memcpy(r->body + r->len, upload_data, *upload_size);
            r->len += *upload_size;
            r->body[r->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    r->handled = true;
    if (r->too_big)
        return send_error(r, 413, "invalid_request_error", NULL, "body_too_large",
                          "request body is larger than the limit of %zu bytes", sv->o.max_body);
    if (sv->draining)
        return send_error(r, 503, "server_error", NULL, NULL, "the server is shutting down");
    switch (r->route) {
    case R_CHAT:
    case R_COMPL:
        return handle_completion(r);
    case R_TOKENIZE:
        return handle_tokenize(r);
    case R_DETOKENIZE:
        return handle_detokenize(r);
    default:
        return send_error(r, 404, "invalid_request_error", NULL, "not_found", "not found");
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)c;
    server *sv = cls;
    hreq *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->job && !r->ans.done && sv->s) sched_cancel(sv->s, r->job);
    int status = r->queued ? r->status : 499; /* 499: the client went away before an answer */
    if (r->queued && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->ans.stream) status = 499;
    metrics_count_request(sv->m, status);
    if (r->prev)
        r->prev->next = r->next;
    else
        sv->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    hreq_free(r);
}

/* ---------- the loop ---------- */

static void on_mhd_timer(uv_timer_t *t) {
    run_mhd(t->data);
}

static void run_mhd(server *sv) {
    if (!sv->d) return;
    MHD_run(sv->d);
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (MHD_get_timeout(sv->d, &ms) == MHD_YES) {
        if (ms > 1000) ms = 1000;
        uv_timer_start(&sv->mhd_timer, on_mhd_timer, ms, 0);
    } else {
        uv_timer_start(&sv->mhd_timer, on_mhd_timer, 1000, 0);
    }
}

static void on_poll(uv_poll_t *p, int status, int events) {
    (void)status;
    (void)events;
    run_mhd(p->data);
}

/* Is the peer of a suspended connection gone? (MHD does not watch suspended sockets.) */
static bool peer_gone(int fd) {
    if (fd < 0) return false;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    return false;
}

static void stop_everything(server *sv);

static void on_tick(uv_timer_t *t) {
    server *sv = t->data;
    double now = clock_now_s();
    bool kick = false;
    for (hreq *r = sv->reqs; r; r = r->next) {
        if (!r->job || r->ans.done) continue;
        if (r->suspended && !r->gone && peer_gone(r->fd)) {
            r->gone = true;
            if (sv->s) sched_cancel(sv->s, r->job);
            resume(r);
            kick = true;
            continue;
        }
        if (r->ans.stream && r->queued && !r->gone &&
            now - r->last_write > sv->o.keepalive_ms / 1e3 && r->out_off == r->out_len) {
            out_append(r, ": keep-alive\n\n", 14);
            r->last_write = now;
            resume(r);
            kick = true;
        }
    }
    if (sv->draining && !sv->stopping) {
        bool busy = false;
        for (hreq *r = sv->reqs; r; r = r->next)
            if (r->job && !r->gone) busy = true;
        if (sv->s && sched_n_jobs(sv->s) > 0) busy = true;
        if (!busy) {
            stop_everything(sv);
            return;
        }
        if (!sv->aborted && now > sv->drain_deadline) {
            sv->aborted = true;
            sv->abort_deadline = now + 2;
            logf_(sv, "drain timeout: ending %d running request(s)", sched_n_jobs(sv->s));
            if (sv->s) sched_abort_all(sv->s, "the server is shutting down (drain timeout)");
        } else if (sv->aborted && now > sv->abort_deadline) {
            stop_everything(sv);
            return;
        }
    }
    if (kick) run_mhd(sv);
}

static void on_close_noop(uv_handle_t *h) {
    (void)h;
}

static void stop_everything(server *sv) {
    if (sv->stopping) return;
    sv->stopping = true;
    for (hreq *r = sv->reqs; r; r = r->next) {
        r->gone = true;
        resume(r);
    }
    if (sv->d) {
        MHD_run(sv->d);
        MHD_stop_daemon(sv->d);
        sv->d = NULL;
    }
    uv_handle_t *hs[] = {(uv_handle_t *)&sv->poll,   (uv_handle_t *)&sv->mhd_timer,
                         (uv_handle_t *)&sv->tick,   (uv_handle_t *)&sv->wake,
                         (uv_handle_t *)&sv->sigint, (uv_handle_t *)&sv->sigterm};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        if (!uv_is_closing(hs[i])) uv_close(hs[i], on_close_noop);
}

static void on_signal(uv_signal_t *h, int signum) {
    server *sv = h->data;
    if (sv->draining || sv->loading) {
        if (sv->o.log) logf_(sv, "second signal: exiting now");
        _exit(128 + signum);
    }
    sv->draining = true;
    sv->drain_deadline = clock_now_s() + sv->o.drain_ms / 1e3;
    logf_(sv, "%s: no new connections; draining running requests (up to %d ms)",
          signum == SIGINT ? "SIGINT" : "SIGTERM", sv->o.drain_ms);
    if (sv->d) {
        MHD_socket fd = MHD_quiesce_daemon(sv->d);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    if (sv->s) sched_drain(sv->s);
}

static void load_work(uv_work_t *w) {
    server *sv = w->data;
    eng_params p;
    eng_params_default(&p);
    p.n_threads = sv->o.n_threads;
    p.n_ctx = sv->o.n_ctx;
    p.max_seqs = sv->o.parallel;
    p.max_batch_tokens = sv->o.batch;
    /* the scheduler never rewinds a sequence (n > 1 forks at the current position): a conv ring
     * of the last L - 1 columns, not 64 more, which each decode step would walk through cold */
    p.n_restore = 1;
    if (eng_new(&sv->e, sv->o.model_path, &p, sv->err, sizeof sv->err) < 0) sv->e = NULL;
}

static void load_done(uv_work_t *w, int status) {
    server *sv = w->data;
    sv->loading = false;
    if (status || !sv->e) {
        if (!sv->err[0]) snprintf(sv->err, sizeof sv->err, "model load cancelled");
        sv->rc = -1;
        stop_everything(sv);
        return;
    }
    if (sv->stopping || sv->draining) {
        stop_everything(sv);
        return;
    }
    sv->tk = eng_tok(sv->e);
    sched_opts so = {.parallel = sv->o.parallel,
                     .n_ctx = sv->o.n_ctx,
                     .queue_max = sv->o.queue_max,
                     .prefill_chunk = sv->o.prefill_chunk,
                     .cache_bytes = sv->o.cache_bytes,
                     .snap_every = sv->o.snap_every,
                     .cache_dir = sv->o.cache_dir};
    if (sched_new(&sv->s, sv->e, &so, sv->m, sched_notify, &sv->wake, sv->err, sizeof sv->err) <
        0) {
        sv->rc = -1;
        stop_everything(sv);
        return;
    }
    sv->lim.n_vocab = eng_n_vocab(sv->e);
    bool known = false;
    const char *tmpl = gguf_get_str(eng_model(sv->e)->g, "tokenizer.chat_template", NULL, NULL);
    sv->jc.tk = sv->tk;
    sv->jc.n_vocab = eng_n_vocab(sv->e);
    sv->jc.chat_format = chat_detect(tmpl, &known);
    sv->jc.chat_think_open = chat_think_open(tmpl);
    logf_(sv, "chat template: %s%s", chat_format_name(sv->jc.chat_format),
          known ? "" : " (tokenizer.chat_template not recognized or absent: using lfm2)");
    sv->ready = true;
    metrics_set_ready(sv->m, 1);
    logf_(sv, "ready: model %s, %d sequences x %d tokens of context", sv->model_id, sv->o.parallel,
          sched_n_ctx(sv->s));
    if (!sv->o.cache_bytes) {
        logf_(sv, "prompt cache: off (--cache-ram 0)");
    } else {
        logf_(sv, "prompt cache: up to %zu MiB of finished conversations (--cache-ram)",
              sv->o.cache_bytes >> 20);
        if (*sched_cache_note(sv->s)) logf_(sv, "%s", sched_cache_note(sv->s));
    }
    logf_(sv,
          "try: curl http://%s%s%s:%d/v1/chat/completions -H 'Content-Type: application/json'%s"
          " -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":32}'",
          strchr(sv->o.host, ':') ? "[" : "",
          !strcmp(sv->o.host, "0.0.0.0") ? "127.0.0.1" : sv->o.host,
          strchr(sv->o.host, ':') ? "]" : "", sv->o.port,
          /* The key itself never goes to the log: logs are often readable by more people. */
          sv->o.api_key && *sv->o.api_key ? " -H \"Authorization: Bearer $LFM2_API_KEY\"" : "");
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    server *sv = cls;
    if (!sv->o.log) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    sv->o.log(sv->o.log_ud, line);
}

static bool is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a);
    }
    return false;
}

static void model_id_from(server *sv) {
    if (sv->o.alias && *sv->o.alias) {
        snprintf(sv->model_id, sizeof sv->model_id, "%s", sv->o.alias);
        return;
    }
    const char *base = strrchr(sv->o.model_path, '/');
    base = base ? base + 1 : sv->o.model_path;
    snprintf(sv->model_id, sizeof sv->model_id, "%s", base);
    size_t n = strlen(sv->model_id);
    if (n > 5 && !strcmp(sv->model_id + n - 5, ".gguf")) sv->model_id[n - 5] = 0;
}

int http_serve(const http_opts *o, char *err, size_t errlen) {
    server *sv = calloc(1, sizeof *sv);
    if (!sv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    sv->o = *o;
    if (!sv->o.host || !*sv->o.host) sv->o.host = "127.0.0.1";
    if (sv->o.parallel <= 0) sv->o.parallel = 4;
    if (sv->o.keepalive_ms <= 0) sv->o.keepalive_ms = 5000;
    api_limits_default(&sv->lim);
    if (o->max_tokens > 0) sv->lim.max_tokens = o->max_tokens;
    if (o->max_n > 0) sv->lim.max_n = o->max_n;
    if (sv->lim.max_n > sv->o.parallel) sv->lim.max_n = sv->o.parallel;
    model_id_from(sv);
    sv->created = (long long)time(NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sv->rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid() << 40;
    if (metrics_new(&sv->m) < 0) {
        snprintf(err, errlen, "out of memory");
        free(sv);
        return -1;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", sv->o.port);
    int gai = getaddrinfo(sv->o.host, port, &hints, &ai);
    if (gai) {
        snprintf(err, errlen, "--host '%s': cannot resolve: %s", sv->o.host, gai_strerror(gai));
        metrics_free(sv->m);
        free(sv);
        return -1;
    }
    sv->loopback = is_loopback(ai->ai_addr);
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    sv->d = MHD_start_daemon(
        flags, (uint16_t)sv->o.port, NULL, NULL, on_request, sv, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, sv, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        sv, MHD_OPTION_CONNECTION_LIMIT, (unsigned)sv->o.max_conns, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)sv->o.idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)sv->o.max_header, MHD_OPTION_LISTEN_BACKLOG_SIZE, 128u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!sv->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)",
                 sv->o.host, sv->o.port);
        metrics_free(sv->m);
        free(sv);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(sv->d, MHD_DAEMON_INFO_BIND_PORT);
    if (di && di->port) sv->o.port = di->port; /* --port 0: the port the kernel chose */
    di = MHD_get_daemon_info(sv->d, MHD_DAEMON_INFO_EPOLL_FD);
    uv_loop_init(&sv->loop);
    uv_poll_init(&sv->loop, &sv->poll, di->epoll_fd);
    sv->poll.data = sv;
    uv_poll_start(&sv->poll, UV_READABLE, on_poll);
    uv_timer_init(&sv->loop, &sv->mhd_timer);
    sv->mhd_timer.data = sv;
    uv_timer_init(&sv->loop, &sv->tick);
    sv->tick.data = sv;
    uv_timer_start(&sv->tick, on_tick, 200, 200);
    uv_async_init(&sv->loop, &sv->wake, on_wake);
    sv->wake.data = sv;
    uv_signal_init(&sv->loop, &sv->sigint);
    uv_signal_init(&sv->loop, &sv->sigterm);
    sv->sigint.data = sv->sigterm.data = sv;
    uv_signal_start(&sv->sigint, on_signal, SIGINT);
    uv_signal_start(&sv->sigterm, on_signal, SIGTERM);
    logf_(sv, "listening on http://%s%s%s:%d (loading %s)", strchr(sv->o.host, ':') ? "[" : "",
          sv->o.host, strchr(sv->o.host, ':') ? "]" : "", sv->o.port, sv->o.model_path);
    sv->loading = true;
    sv->load.data = sv;
    uv_queue_work(&sv->loop, &sv->load, load_work, load_done);
    run_mhd(sv);
    uv_run(&sv->loop, UV_RUN_DEFAULT);
    if (sv->d) MHD_stop_daemon(sv->d);
    if (sv->s && sv->o.cache_dir && *sv->o.cache_dir) { /* drained: keep the cache */
        char msg[4800];
        sched_cache_save(sv->s, msg, sizeof msg);
        logf_(sv, "%s", msg);
    }
    sched_free(sv->s);
    eng_free(sv->e);
    uv_loop_close(&sv->loop);
    if (sv->rc < 0)
        snprintf(err, errlen, "%s", sv->err);
    else
        rc = 0;
    if (rc == 0) logf_(sv, "shut down cleanly");
    metrics_free(sv->m);
    free(sv);
    return rc;
}
