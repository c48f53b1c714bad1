/* config.h: settings: defaults < config file < LFM2_* environment < flags. */
#ifndef LFM2_CONFIG_H
#define LFM2_CONFIG_H
#include <stddef.h>
#include <stdbool.h>

enum config_log_level { CONFIG_LOG_ERROR = 0, CONFIG_LOG_WARN, CONFIG_LOG_INFO, CONFIG_LOG_DEBUG };

/* Error codes (negative); the message in err names the source (flag, variable or file:line),
 * the key, the value and the accepted range. */
enum { CONFIG_EINVAL = -1, CONFIG_EIO = -2, CONFIG_EHELP = -3 };

typedef struct config {
    char model[4096];    /* -m/--model: GGUF path (required by serve) */
    char alias[256];     /* --alias: model id in the API; "" = the file name without .gguf */
    char host[256];      /* --host: bind address, default 127.0.0.1 (loopback) */
    int port;            /* --port: 0..65535, default 8080 (0 = any free port) */
    int parallel;        /* --parallel/-np: sequences decoded at once, default 4 */
    int ctx;             /* --ctx/-c: context per sequence in tokens, default 4096 */
    int threads;         /* --threads/-t: compute threads, 0 = all cores */
    int batch;           /* --batch/-b: most tokens per engine step (prefill chunk), default 512 */
    char api_key[256];   /* --api-key: required Bearer key, "" = none */
    int queue;           /* --queue: requests waiting for a free sequence, default 64 */
    long body_limit;     /* --body-limit: request body bytes (k/m suffix), default 1m */
    int max_tokens;      /* --max-tokens: largest max_tokens a request may ask, default 32768 */
    int max_n;           /* --max-n: largest n (choices per request), default 8 */
    int max_connections; /* --max-connections: open HTTP connections, default 256 */
    int drain_timeout;   /* --drain-timeout: seconds running requests get on SIGTERM, default 30 */
    int idle_timeout;    /* --idle-timeout: seconds before an idle connection closes, default 60 */
    int keepalive;   /* --keepalive: seconds between SSE comments on silent streams, default 10 */
    char cors[1024]; /* --cors: allowed Origins, comma-separated, "*" = any, "" = no CORS */
    int cache_ram;   /* --cache-ram: prompt cache MiB, 0 = off, -1 (default) = RAM/8, <= 8192 */
    int cache_snap_every; /* --cache-snap-every: snapshot interval in tokens, default 256 */
    char cache_dir[4096]; /* --cache-dir: prompt cache kept across restarts there, "" = none */
    enum config_log_level log_level; /* --log-level: error|warn|info|debug, default info */
    char config_file[4096];          /* --config / LFM2_CONFIG: the file read ("" = none) */
} config;

/* The built-in defaults. */
void config_defaults(config *c);

/* Sets one setting by name (file key "drain_timeout" or flag name "drain-timeout") from text.
 * src names where it came from for the message ("--port", "LFM2_PORT", "lfm2.conf:3").
 * CONFIG_EINVAL for an unknown key or a bad value. */
int config_set(config *c, const char *key, const char *value, const char *src, char *err,
               size_t errlen);

/* Reads "key = value" lines ('#' starts a comment line, blank lines ignored, values may be
 * "double-quoted"). CONFIG_EIO if unreadable, CONFIG_EINVAL for a bad line/key/value. */
int config_load_file(config *c, const char *path, char *err, size_t errlen);

/* Applies every LFM2_<KEY> variable of envp (NULL = the process environment) whose KEY is a
 * setting. Other LFM2_* names are left alone (other parts of the program, e.g. kernel choice,
 * read their own variables); LFM2_CONFIG is handled by config_parse_args. */
int config_load_env(config *c, char **envp, char *err, size_t errlen);

/* The whole precedence chain for argv (argv[0] is the command name and is skipped):
 * defaults, then the file (--config, else LFM2_CONFIG), then the environment, then the flags.
 * Flags: --key value, --key=value, short -m -t -c -b -np. CONFIG_EHELP when -h/--help is given
 * (the caller prints config_usage). envp NULL = the process environment. */
int config_parse_args(config *c, int argc, char **argv, char **envp, char *err, size_t errlen);

/* The model id the API reports: alias, else the model path's file name without ".gguf"
 * (written into buf, cap bytes). Returns alias or buf. */
const char *config_model_id(const config *c, char *buf, size_t cap);

/* Option help text, one line per setting with flag, env name, default (for --help). Returns
 * the length it needs (like snprintf). */
size_t config_usage(char *buf, size_t cap);

/* "key = value" lines of the effective settings (api_key shown as "(set)"); like snprintf. */
size_t config_dump(const config *c, char *buf, size_t cap);

#endif
