/* config.c: one table of settings read from a file, LFM2_* variables and flags. */
#include "config/config.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

enum kind { K_STR, K_INT, K_LONG_SIZE, K_LOG, K_HOST };

typedef struct setting {
    const char *name; /* file key; flag = --name with '-' for '_'; env = LFM2_NAME */
    const char *short_flag;
    enum kind kind;
    size_t off;      /* offsetof(config, field) */
    size_t size;     /* bytes of a string field */
    long lo, hi;     /* accepted range of numbers */
    const char *def; /* default, as text (applied by config_defaults) */
    const char *help;
} setting;

#define STR(f) K_STR, offsetof(config, f), sizeof(((config *)0)->f)
#define INT(f) K_INT, offsetof(config, f), sizeof(int)

static const setting settings[] = {
    {"model", "-m", STR(model), 0, 0, "", "GGUF model file to serve"},
    {"alias", NULL, STR(alias), 0, 0, "", "model id reported by the API (default: the file name)"},
    {"host", NULL, K_HOST, offsetof(config, host), sizeof(((config *)0)->host), 0, 0, "127.0.0.1",
     "address to listen on"},
    {"port", NULL, INT(port), 0, 65535, "8080", "TCP port (0: any free port)"},
    {"parallel", "-np", INT(parallel), 1, 256, "4", "sequences decoded at once"},
    {"ctx", "-c", INT(ctx), 16, 1048576, "4096", "context size per sequence, in tokens"},
    {"threads", "-t", INT(threads), 0, 1024, "0", "compute threads (0: all cores)"},
    {"batch", "-b", INT(batch), 1, 65536, "512",
     "most tokens per engine step, all sequences together (a prompt enters in chunks of up to "
     "256)"},
    {"api_key", NULL, STR(api_key), 0, 0, "",
     "require 'Authorization: Bearer KEY' (empty: no key)"},
    {"queue", NULL, INT(queue), 0, 100000, "64", "requests waiting for a free sequence"},
    {"body_limit", NULL, K_LONG_SIZE, offsetof(config, body_limit), sizeof(long), 1024, 1L << 30,
     "1m", "largest request body (bytes; k/m/g suffixes)"},
    {"max_tokens", NULL, INT(max_tokens), 1, 10000000, "32768",
     "largest max_tokens a request may ask for"},
    {"max_n", NULL, INT(max_n), 1, 128, "8", "largest n (choices per request)"},
    {"max_connections", NULL, INT(max_connections), 1, 65536, "256", "open HTTP connections"},
    {"drain_timeout", NULL, INT(drain_timeout), 0, 86400, "30",
     "seconds running requests may finish after SIGINT/SIGTERM"},
    {"idle_timeout", NULL, INT(idle_timeout), 1, 86400, "60",
     "seconds before an idle connection is closed"},
    {"keepalive", NULL, INT(keepalive), 1, 3600, "10",
     "seconds between SSE keep-alive comments on silent streams"},
    {"cors", NULL, STR(cors), 0, 0, "",
     "allowed CORS origins, comma-separated ('*': any; empty: no CORS headers)"},
    {"cache_ram", NULL, INT(cache_ram), -1, 1 << 24, "-1",
     "prompt cache budget in MiB (0: off; -1: an eighth of the machine's RAM, at most 8192)"},
    {"cache_dir", NULL, STR(cache_dir), 0, 0, "",
     "folder where a draining server writes its prompt cache and a starting one reads it "
     "(empty: none)"},
    {"cache_snap_every", NULL, INT(cache_snap_every), 16, 1 << 20, "256",
     "prompt cache: conv snapshot every this many tokens of a long prompt or answer"},
    {"log_level", NULL, K_LOG, offsetof(config, log_level), sizeof(int), 0, 0, "info",
     "error, warn, info or debug"},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static const char *log_names[] = {"error", "warn", "info", "debug"};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Matches file keys and flag names: '-' and '_' are the same, case-insensitive. */
static const setting *find_setting(const char *key, size_t len) {
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *n = settings[i].name;
        size_t j = 0;
        for (; j < len && n[j]; j++) {
            char a = (char)tolower((unsigned char)key[j]), b = n[j];
            if (a == '-') a = '_';
            if (a != b) break;
        }
        if (j == len && !n[j]) return &settings[i];
    }
    return NULL;
}

static int set_value(config *c, const setting *s, const char *v, const char *src, char *err,
                     size_t errlen) {
    char *p = (char *)c + s->off;
    switch (s->kind) {
    case K_STR:
    case K_HOST: {
        size_t l = strlen(v);
        if (l >= s->size)
            return fail(err, errlen, CONFIG_EINVAL, "%s: value is %zu bytes long; the limit is %zu",
                        src, l, s->size - 1);
        if (s->kind == K_HOST && l == 0)
            return fail(err, errlen, CONFIG_EINVAL,
                        "%s: the host must not be empty (e.g. 127.0.0.1 or 0.0.0.0)", src);
        memcpy(p, v, l + 1);
        return 0;
    }
    case K_INT:
    case K_LONG_SIZE: {
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (end == v || errno)
            return fail(err, errlen, CONFIG_EINVAL,
                        "%s: '%.64s' is not a number (accepted %ld..%ld)", src, v, s->lo, s->hi);
        if (s->kind == K_LONG_SIZE && *end) {
            long long mul = 0;
            switch (*end) {
            case 'k':
            case 'K':
                mul = 1024;
                break;
            case 'm':
            case 'M':
                mul = 1024 * 1024;
                break;
            case 'g':
            case 'G':
                mul = 1024 * 1024 * 1024;
                break;
            }
            if (mul && (end[1] == 0 || ((end[1] == 'b' || end[1] == 'B') && end[2] == 0))) {
                if (x > LLONG_MAX / mul || x < LLONG_MIN / mul)
                    x = LLONG_MAX;
                else
                    x *= mul;
                end += strlen(end);
            }
        }
        if (*end)
            return fail(err, errlen, CONFIG_EINVAL,
                        "%s: '%.64s' is not a whole number (accepted %ld..%ld%s)", src, v, s->lo,
                        s->hi, s->kind == K_LONG_SIZE ? ", k/m/g suffixes allowed" : "");
        if (x < s->lo || x > s->hi)
            return fail(err, errlen, CONFIG_EINVAL, "%s: %.64s is out of range; accepted %ld..%ld",
                        src, v, s->lo, s->hi);
        if (s->kind == K_INT)
            *(int *)p = (int)x;
        else
            *(long *)p = (long)x;
        return 0;
    }
    case K_LOG:
        for (int i = 0; i < 4; i++)
            if (!strcasecmp(v, log_names[i])) {
                *(enum config_log_level *)p = (enum config_log_level)i;
                return 0;
            }
        return fail(err, errlen, CONFIG_EINVAL,
                    "%s: '%.64s' is not a log level; accepted error, warn, info, debug", src, v);
    }
    return fail(err, errlen, CONFIG_EINVAL, "%s: internal error", src);
}

void config_defaults(config *c) {
    memset(c, 0, sizeof *c);
    char err[16];
    for (size_t i = 0; i < N_SETTINGS; i++) {
        int rc = set_value(c, &settings[i], settings[i].def, settings[i].name, err, sizeof err);
        (void)rc; /* the table's defaults are valid (tests/test_config.c checks) */
    }
}

int config_set(config *c, const char *key, const char *value, const char *src, char *err,
               size_t errlen) {
    const setting *s = find_setting(key, strlen(key));
    if (!s)
        return fail(err, errlen, CONFIG_EINVAL,
                    "%s: unknown setting '%.64s' (see 'lfm2 serve --help' for the list)",
                    src ? src : key, key);
    return set_value(c, s, value, src ? src : key, err, errlen);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    *e = 0;
    return s;
}

int config_load_file(config *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(err, errlen, CONFIG_EIO, "config file '%s': cannot open: %s", path,
                    strerror(errno));
    char line[8192];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char src[4200];
        snprintf(src, sizeof src, "%s:%d", path, lineno);
        size_t ll = strlen(line);
        if (ll == sizeof line - 1 && line[ll - 1] != '\n') {
            rc = fail(err, errlen, CONFIG_EINVAL, "%s: line longer than %zu bytes", src,
                      sizeof line - 2);
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fail(err, errlen, CONFIG_EINVAL,
                      "%s: expected 'key = value' (or a # comment), got '%.64s'", src, s);
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = 0;
            val++;
        }
        if (!*key) {
            rc = fail(err, errlen, CONFIG_EINVAL, "%s: missing key before '='", src);
            break;
        }
        if (find_setting(key, strlen(key)) == NULL) {
            char known[512];
            size_t kn = 0;
            for (size_t i = 0; i < N_SETTINGS && kn < sizeof known; i++)
                kn += (size_t)snprintf(known + kn, sizeof known - kn, "%s%s", i ? " " : "",
                                       settings[i].name);
            rc = fail(err, errlen, CONFIG_EINVAL, "%s: unknown setting '%.64s' (known: %s)", src,
                      key, known);
            break;
        }
        char full[4300];
        snprintf(full, sizeof full, "%s: %s", src, key);
        if ((rc = config_set(c, key, val, full, err, errlen))) break;
    }
    if (!rc && ferror(f)) rc = fail(err, errlen, CONFIG_EIO, "config file '%s': read error", path);
    fclose(f);
    if (!rc) snprintf(c->config_file, sizeof c->config_file, "%s", path);
    return rc;
}

int config_load_env(config *c, char **envp, char *err, size_t errlen) {
    if (!envp) envp = environ;
    if (!envp) return 0;
    for (char **e = envp; *e; e++) {
        if (strncmp(*e, "LFM2_", 5) != 0) continue;
        const char *k = *e + 5, *eq = strchr(k, '=');
        if (!eq) continue;
        const setting *s = find_setting(k, (size_t)(eq - k));
        if (!s) continue;
        char src[128];
        snprintf(src, sizeof src, "%.*s", (int)(eq - *e < 100 ? eq - *e : 100), *e);
        int rc = set_value(c, s, eq + 1, src, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

static const char *env_get(char **envp, const char *name) {
    size_t nl = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (!strncmp(*e, name, nl) && (*e)[nl] == '=') return *e + nl + 1;
    return NULL;
}

/* Resolves argv[i] to a setting and its value; advances *i past a separate value. */
static int flag_at(int argc, char **argv, int *i, const setting **s, const char **val,
                   bool *is_config, char *err, size_t errlen) {
    const char *a = argv[*i];
    *s = NULL;
    *is_config = false;
    *val = NULL;
    const char *eq = NULL;
    size_t nl;
    if (a[0] == '-' && a[1] == '-' && a[2]) {
        const char *name = a + 2;
        eq = strchr(name, '=');
        nl = eq ? (size_t)(eq - name) : strlen(name);
        if (nl == 6 && !strncmp(name, "config", 6))
            *is_config = true;
        else if (!(*s = find_setting(name, nl)))
            return fail(err, errlen, CONFIG_EINVAL,
                        "unknown option '%.*s' (see 'lfm2 serve --help')", (int)(nl + 2), a);
    } else if (a[0] == '-' && a[1]) {
        for (size_t k = 0; k < N_SETTINGS; k++)
            if (settings[k].short_flag && !strcmp(settings[k].short_flag, a)) *s = &settings[k];
        if (!*s)
            return fail(err, errlen, CONFIG_EINVAL,
                        "unknown option '%.32s' (see 'lfm2 serve --help')", a);
    } else {
        return fail(err, errlen, CONFIG_EINVAL,
                    "unexpected argument '%.64s' (settings are given as --name value)", a);
    }
    if (eq) {
        *val = eq + 1;
    } else {
        if (*i + 1 >= argc)
            return fail(err, errlen, CONFIG_EINVAL, "option '%.64s' needs a value", a);
        *val = argv[++*i];
    }
    return 0;
}

int config_parse_args(config *c, int argc, char **argv, char **envp, char *err, size_t errlen) {
    if (!envp) envp = environ;
    config_defaults(c);
    const char *cfg_path = NULL;
    /* pass 1: syntax, --help, --config */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return fail(err, errlen, CONFIG_EHELP, "help requested");
        const setting *s;
        const char *v;
        bool is_cfg;
        int rc = flag_at(argc, argv, &i, &s, &v, &is_cfg, err, errlen);
        if (rc) return rc;
        if (is_cfg) cfg_path = v;
    }
    if (!cfg_path) cfg_path = env_get(envp, "LFM2_CONFIG");
    if (cfg_path && cfg_path[0]) {
        int rc = config_load_file(c, cfg_path, err, errlen);
        if (rc) return rc;
    }
    int rc = config_load_env(c, envp, err, errlen);
    if (rc) return rc;
    /* pass 2: apply the flags in order (the last one wins) */
    for (int i = 1; i < argc; i++) {
        const setting *s;
        const char *v;
        bool is_cfg;
        char src[80];
        snprintf(src, sizeof src, "%.70s", argv[i]);
        char *eq = strchr(src, '=');
        if (eq && src[0] == '-' && src[1] == '-') *eq = 0;
        rc = flag_at(argc, argv, &i, &s, &v, &is_cfg, err, errlen);
        if (rc) return rc;
        if (is_cfg) continue;
        if ((rc = set_value(c, s, v, src, err, errlen))) return rc;
    }
    return 0;
}

const char *config_model_id(const config *c, char *buf, size_t cap) {
    if (c->alias[0]) return c->alias;
    const char *slash = strrchr(c->model, '/');
    const char *name = slash ? slash + 1 : c->model;
    size_t n = strlen(name);
    if (n > 5 && !strcasecmp(name + n - 5, ".gguf")) n -= 5;
    snprintf(buf, cap, "%.*s", (int)n, name);
    return buf;
}

static void upper_env(char *out, size_t cap, const char *name) {
    size_t o = snprintf(out, cap, "LFM2_");
    for (; *name && o + 1 < cap; name++)
        out[o++] = (char)toupper((unsigned char)*name);
    out[o] = 0;
}

static void flag_name(char *out, size_t cap, const char *name) {
    size_t o = snprintf(out, cap, "--");
    for (; *name && o + 1 < cap; name++)
        out[o++] = *name == '_' ? '-' : *name;
    out[o] = 0;
}

#define APPEND(...)                                                                                \
    do {                                                                                           \
        int w_ = snprintf(buf ? buf + (n < cap ? n : cap) : NULL, n < cap ? cap - n : 0,           \
                          __VA_ARGS__); /* buf NULL: only count (NULL + 0 is undefined) */         \
        if (w_ > 0) n += (size_t)w_;                                                               \
    } while (0)

size_t config_usage(char *buf, size_t cap) {
    size_t n = 0;
    if (!buf) cap = 0;
    APPEND("  %-26s %-22s %s\n", "--config FILE", "LFM2_CONFIG",
           "read settings from FILE (key = value lines)");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        char fl[64], env[64], both[80];
        flag_name(fl, sizeof fl, s->name);
        upper_env(env, sizeof env, s->name);
        if (s->short_flag)
            snprintf(both, sizeof both, "%s, %s", s->short_flag, fl);
        else
            snprintf(both, sizeof both, "%s", fl);
        if (strstr(s->help, "(default:")) /* the help says the default in words */
            APPEND("  %-26s %-22s %s\n", both, env, s->help);
        else
            APPEND("  %-26s %-22s %s (default: %s)\n", both, env, s->help,
                   s->def[0] ? s->def : "none");
    }
    return n;
}

size_t config_dump(const config *c, char *buf, size_t cap) {
    size_t n = 0;
    if (!buf) cap = 0;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        const char *p = (const char *)c + s->off;
        switch (s->kind) {
        case K_STR:
        case K_HOST:
            if (!strcmp(s->name, "api_key"))
                APPEND("%s = %s\n", s->name, p[0] ? "(set)" : "");
            else
                APPEND("%s = %s\n", s->name, p);
            break;
        case K_INT:
            APPEND("%s = %d\n", s->name, *(const int *)p);
            break;
        case K_LONG_SIZE:
            APPEND("%s = %ld\n", s->name, *(const long *)p);
            break;
        case K_LOG:
            APPEND("%s = %s\n", s->name, log_names[*(const int *)p & 3]);
            break;
        }
    }
    return n;
}
