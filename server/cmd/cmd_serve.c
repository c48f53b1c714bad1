/* cmd_serve.c: `lfm2 serve`: settings (flags > LFM2_* env > config file > defaults) -> http_serve.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "config/config.h"
#include "server/cmd/cli.h"
#include "server/http.h"

static void serve_log(void *ud, const char *line) {
    (void)ud;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s lfm2 serve: %s\n", ts, line);
    fflush(stderr);
}

/* The prompt cache's budget in bytes for --cache-ram MiB: -1 is an eighth of the memory the
 * process may use (the machine's RAM, or a container's cgroup v2 memory.max when lower), at
 * most 8 GiB: the model and the live sequences need the rest. */
static size_t cache_budget(int mib) {
    if (mib >= 0) return (size_t)mib << 20;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    unsigned long long ram = pages > 0 && page > 0 ? (unsigned long long)pages * (size_t)page : 0;
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r"); /* "max" or a number of bytes */
    unsigned long long lim;
    if (f) {
        if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && lim < ram) ram = lim;
        fclose(f);
    }
    unsigned long long b = ram / 8, cap = 8ULL << 30;
    return (size_t)(b < cap ? b : cap);
}

int cmd_serve(int argc, char **argv) {
    config c;
    char err[1024];
    int rc = config_parse_args(&c, argc, argv, NULL, err, sizeof err);
    if (rc == CONFIG_EHELP) {
        size_t n = config_usage(NULL, 0);
        char *buf = malloc(n + 1);
        if (buf) {
            config_usage(buf, n + 1);
            printf("usage: lfm2 serve -m FILE [options]\n"
                   "OpenAI-compatible HTTP server (chat/completions, completions, models, health,\n"
                   "metrics, tokenize, detokenize). Options (flag, LFM2_* variable, default):\n%s",
                   buf);
            free(buf);
        }
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    if (!c.model[0]) {
        fprintf(stderr, "error: serve needs a model: -m FILE (or model = ... in the config file, "
                        "or LFM2_MODEL)\n");
        return 2;
    }
    if (access(c.model, R_OK) != 0) { /* fail before binding; the real checks come with the load */
        fprintf(stderr, "error: model file '%s': %s\n", c.model, strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    http_opts o;
    http_opts_default(&o);
    o.model_path = c.model;
    o.host = c.host;
    o.port = c.port;
    o.api_key = c.api_key[0] ? c.api_key : NULL;
    o.alias = c.alias[0] ? c.alias : NULL;
    o.parallel = c.parallel;
    o.n_ctx = c.ctx;
    o.n_threads = c.threads;
    o.batch = c.batch;
    o.queue_max = c.queue;
    o.max_body = (size_t)c.body_limit;
    o.max_tokens = c.max_tokens;
    o.max_n = c.max_n;
    o.max_conns = c.max_connections;
    o.drain_ms = c.drain_timeout * 1000;
    o.idle_timeout_s = c.idle_timeout;
    o.keepalive_ms = c.keepalive * 1000;
    o.cors = c.cors;
    o.cache_bytes = cache_budget(c.cache_ram);
    o.snap_every = c.cache_snap_every;
    o.cache_dir = c.cache_dir[0] ? c.cache_dir : NULL;
    o.log = c.log_level >= CONFIG_LOG_INFO ? serve_log : NULL; /* errors still reach stderr */
    if (http_serve(&o, err, sizeof err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    return 0;
}
