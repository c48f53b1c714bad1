/* http.h: the OpenAI-compatible HTTP front end: libmicrohttpd driven from a libuv loop. */
#ifndef LFM2_HTTP_H
#define LFM2_HTTP_H
#include <stddef.h>
#include <stdbool.h>

/* Everything `lfm2 serve` needs; http_opts_default fills the defaults noted per field. */
typedef struct http_opts {
    const char *model_path;
    const char *host;    /* bind address; default "127.0.0.1" (loopback: Host header checked) */
    int port;            /* default 8080 */
    const char *api_key; /* NULL or "": no auth; else "Authorization: Bearer KEY" required */
    const char *alias;   /* model id in responses; NULL: the file name without .gguf */
    int parallel;        /* sequences at once; default 4 */
    int n_ctx;           /* context per sequence; 0 = engine default */
    int n_threads;       /* engine threads; 0 = all cores */
    int queue_max;       /* requests waiting beyond the running ones; default 64 */
    int prefill_chunk;   /* prompt tokens per step per request; default 256 */
    size_t max_body;     /* request body bytes; default 1 MiB (413 beyond) */
    size_t max_header;   /* per-connection memory for the request line + headers; default 32 KiB */
    int max_conns;       /* simultaneous connections; default 256 */
    int idle_timeout_s;  /* idle connection timeout; default 60 */
    int keepalive_ms;    /* SSE comment interval on an idle stream; default 5000 */
    int drain_ms;        /* shutdown: time running requests get to finish; default 30000 */
    int max_tokens;      /* largest max_tokens accepted; default 32768 */
    int max_n;           /* largest n; default 8 (and never more than parallel) */
    int batch;           /* most tokens per engine step; 0 = engine default (512) */
    const char *cors;    /* allowed Origins, comma-separated; "*" any; NULL/"" no CORS headers */
    size_t cache_bytes;  /* prompt cache budget in bytes; 0 = off (default) */
    int snap_every;      /* prompt cache: conv snapshot every this many tokens; 0 = 256 */
    const char *cache_dir; /* NULL/"": none; else the prompt cache is read from there at load
                              and written there after a drain */
    /* Log sink for the operator (startup, ready, load errors, shutdown); NULL = silent. */
    void (*log)(void *ud, const char *line);
    void *log_ud;
} http_opts;

void http_opts_default(http_opts *o);

/* Binds, starts answering (/health says 503 while the model loads in the background), loads the
 * model, then serves until SIGINT/SIGTERM: a first signal stops accepting and drains (running
 * requests get drain_ms, then an error event), a second exits the process at once.
 * Returns 0 after a clean shutdown, negative with err filled when it could not start or the
 * model failed to load. */
int http_serve(const http_opts *o, char *err, size_t errlen);

#endif
