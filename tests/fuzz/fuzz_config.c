/* fuzz_config.c: libFuzzer harness: settings from any flags, LFM2_* variables, config text. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "config/config.h"
#include "tests/fuzz/fuzz.h"

/* The input is split into lines: a line starting with '-' is a command-line argument (as is
 * the rest of a line starting with '+'), one starting with "LFM2_" an environment entry, any
 * other line goes into a config file (an in-memory file passed with --config). Whatever the text:
 * an error with a message, or settings inside their documented ranges whose dump reads back to the
 * same settings. */

#define MAX_ARGS 64

static bool clean(const char *s) { /* survives "key = value" + trim + unquote unchanged */
    size_t n = strlen(s);
    if (strpbrk(s, "\r\n")) return false;
    if (n && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t')) return false;
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') return false;
    return true;
}

static void check_ranges(const config *c) {
    FUZZ_CHECK(strnlen(c->model, sizeof c->model) < sizeof c->model);
    FUZZ_CHECK(strnlen(c->alias, sizeof c->alias) < sizeof c->alias);
    FUZZ_CHECK(strnlen(c->host, sizeof c->host) < sizeof c->host && c->host[0]);
    FUZZ_CHECK(strnlen(c->api_key, sizeof c->api_key) < sizeof c->api_key);
    FUZZ_CHECK(strnlen(c->cors, sizeof c->cors) < sizeof c->cors);
    FUZZ_CHECK(c->port >= 0 && c->port <= 65535);
    FUZZ_CHECK(c->parallel >= 1 && c->parallel <= 256);
    FUZZ_CHECK(c->ctx >= 16 && c->ctx <= 1048576);
    FUZZ_CHECK(c->threads >= 0 && c->threads <= 1024);
    FUZZ_CHECK(c->batch >= 1 && c->batch <= 65536);
    FUZZ_CHECK(c->queue >= 0 && c->queue <= 100000);
    FUZZ_CHECK(c->body_limit >= 1024 && c->body_limit <= 1L << 30);
    FUZZ_CHECK(c->max_tokens >= 1 && c->max_tokens <= 10000000);
    FUZZ_CHECK(c->max_n >= 1 && c->max_n <= 128);
    FUZZ_CHECK(c->max_connections >= 1 && c->max_connections <= 65536);
    FUZZ_CHECK(c->drain_timeout >= 0 && c->drain_timeout <= 86400);
    FUZZ_CHECK(c->idle_timeout >= 1 && c->idle_timeout <= 86400);
    FUZZ_CHECK(c->keepalive >= 1 && c->keepalive <= 3600);
    FUZZ_CHECK(c->log_level >= CONFIG_LOG_ERROR && c->log_level <= CONFIG_LOG_DEBUG);
}

/* config_dump written to a file and read back gives the same settings (the api key is shown
 * as "(set)", so it is compared separately; strings only when "key = value" can carry them). */
static void check_dump_roundtrip(const config *c) {
    size_t n = config_dump(c, NULL, 0);
    char *d = malloc(n + 1);
    FUZZ_CHECK(d != NULL);
    FUZZ_CHECK(config_dump(c, d, n + 1) == n && strlen(d) == n);
    bool strings_ok = clean(c->model) && clean(c->alias) && clean(c->host) && clean(c->cors);
    int fd = memfd_create("lfm2-dump", 0);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(write(fd, d, n) == (ssize_t)n);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    config r;
    config_defaults(&r);
    char err[512];
    int rc = config_load_file(&r, path, err, sizeof err);
    close(fd);
    free(d);
    if (!strings_ok) return; /* e.g. a model path with a newline cannot be written as a line */
    if (rc) fprintf(stderr, "dump does not read back: %s\n", err);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(!strcmp(r.model, c->model) && !strcmp(r.alias, c->alias));
    FUZZ_CHECK(!strcmp(r.host, c->host) && !strcmp(r.cors, c->cors));
    FUZZ_CHECK(r.port == c->port && r.parallel == c->parallel && r.ctx == c->ctx);
    FUZZ_CHECK(r.threads == c->threads && r.batch == c->batch && r.queue == c->queue);
    FUZZ_CHECK(r.body_limit == c->body_limit && r.max_tokens == c->max_tokens);
    FUZZ_CHECK(r.max_n == c->max_n && r.max_connections == c->max_connections);
    FUZZ_CHECK(r.drain_timeout == c->drain_timeout && r.idle_timeout == c->idle_timeout);
    FUZZ_CHECK(r.keepalive == c->keepalive && r.log_level == c->log_level);
    FUZZ_CHECK(!strcmp(r.api_key, c->api_key[0] ? "(set)" : ""));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = 0;
    char *argv[MAX_ARGS + 4], *envp[MAX_ARGS + 1];
    int argc = 0, envc = 0;
    argv[argc++] = "serve";
    int fd = memfd_create("lfm2-conf", 0);
    FUZZ_CHECK(fd >= 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char cfg_flag[80], cfg_env[80];
    snprintf(cfg_flag, sizeof cfg_flag, "--config=%s", path);
    snprintf(cfg_env, sizeof cfg_env, "LFM2_CONFIG=%s", path);
    bool has_file = false;
    for (char *line = text, *next; line; line = next) {
        next = memchr(line, '\n', (size_t)(text + size - line));
        if (next) *next++ = 0;
        /* a config path named by the input would read any file (or block on a fifo): every
         * --config and LFM2_CONFIG names the in-memory file instead */
        if (!strncmp(line, "--config", 8) && argc < MAX_ARGS) {
            argv[argc++] = cfg_flag;
        } else if (line[0] == '-' && argc < MAX_ARGS) {
            argv[argc++] = line;
        } else if (line[0] == '+' && argc < MAX_ARGS) { /* an argument of any text */
            argv[argc++] = line + 1;
        } else if (!strncmp(line, "LFM2_CONFIG", 11) && envc < MAX_ARGS) {
            envp[envc++] = cfg_env;
        } else if (!strncmp(line, "LFM2_", 5) && envc < MAX_ARGS) {
            envp[envc++] = line;
        } else {
            size_t l = strlen(line);
            FUZZ_CHECK(write(fd, line, l) == (ssize_t)l && write(fd, "\n", 1) == 1);
            has_file = true;
        }
        if (!next || next >= text + size) break;
    }
    if (has_file && argc < MAX_ARGS + 2) {
        argv[argc++] = "--config";
        argv[argc++] = path;
    }
    argv[argc] = NULL;
    envp[envc] = NULL;

    config c;
    char err[512];
    err[0] = 0;
    int rc = config_parse_args(&c, argc, argv, envp, err, sizeof err);
    if (rc == 0) {
        check_ranges(&c);
        check_dump_roundtrip(&c);
        char id[300];
        const char *mid = config_model_id(&c, id, sizeof id);
        FUZZ_CHECK(mid != NULL && strlen(mid) < sizeof c.model);
        FUZZ_CHECK(!c.config_file[0] || !strcmp(c.config_file, path));
    } else {
        FUZZ_CHECK(rc == CONFIG_EINVAL || rc == CONFIG_EIO || rc == CONFIG_EHELP);
        FUZZ_CHECK(err[0] != 0 && strlen(err) < sizeof err);
    }
    size_t un = config_usage(NULL, 0);
    FUZZ_CHECK(un > 0);
    close(fd);
    free(text);
    return 0;
}
