/* test_config.c: settings precedence, file syntax and error messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config/config.h"
#include "tests/check.h"

static char tmpdir[512];

static const char *write_file(const char *name, const char *text) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return path;
}

#define ARGV(...) ((char *[]){"serve", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"serve", __VA_ARGS__}) / sizeof(char *)))

static int parse(config *c, int argc, char **argv, char **envp, char *err) {
    return config_parse_args(c, argc, argv, envp, err, 256);
}

static void test_defaults(void) {
    config c;
    config_defaults(&c);
    CHECK_STR(c.host, "127.0.0.1");
    CHECK_EQ_INT(c.port, 8080);
    CHECK_EQ_INT(c.parallel, 4);
    CHECK_EQ_INT(c.ctx, 4096);
    CHECK_EQ_INT(c.threads, 0);
    CHECK_EQ_INT(c.batch, 512);
    CHECK_EQ_INT(c.queue, 64);
    CHECK_EQ_INT(c.body_limit, 1048576);
    CHECK_EQ_INT(c.max_tokens, 32768);
    CHECK_EQ_INT(c.max_n, 8);
    CHECK_EQ_INT(c.drain_timeout, 30);
    CHECK_EQ_INT(c.idle_timeout, 60);
    CHECK_EQ_INT(c.keepalive, 10);
    CHECK_EQ_INT(c.log_level, CONFIG_LOG_INFO);
    CHECK_STR(c.api_key, "");
    CHECK_STR(c.cors, "");
    CHECK_STR(c.model, "");
    /* parse with nothing at all = defaults */
    char *env[] = {NULL};
    char err[256] = "";
    config d;
    char *argv[] = {"serve", NULL};
    CHECK_EQ_INT(config_parse_args(&d, 1, argv, env, err, sizeof err), 0);
    CHECK(memcmp(&c, &d, sizeof c) == 0);
}

static void test_precedence(void) {
    const char *file = write_file("p.conf", "# test\nport = 1000\nctx = 1024\nthreads = 3\n"
                                            "alias = \"from file\"\n");
    char cfgflag[1100];
    snprintf(cfgflag, sizeof cfgflag, "--config=%s", file);
    char err[256] = "";
    config c;
    char *env_none[] = {NULL};
    char *env_port[] = {"LFM2_PORT=2000", "LFM2_CTX=2048", "PATH=/bin", NULL};

    /* file only */
    CHECK_EQ_INT(parse(&c, ARGC(cfgflag), ARGV(cfgflag), env_none, err), 0);
    CHECK_EQ_INT(c.port, 1000);
    CHECK_EQ_INT(c.ctx, 1024);
    CHECK_EQ_INT(c.threads, 3);
    CHECK_STR(c.alias, "from file");
    CHECK_STR(c.config_file, file);
    /* env beats file */
    CHECK_EQ_INT(parse(&c, ARGC(cfgflag), ARGV(cfgflag), env_port, err), 0);
    CHECK_EQ_INT(c.port, 2000);
    CHECK_EQ_INT(c.ctx, 2048);
    CHECK_EQ_INT(c.threads, 3); /* untouched by env: still the file's */
    /* flags beat env, whatever their position relative to --config */
    CHECK_EQ_INT(
        parse(&c, ARGC("--port", "3000", cfgflag), ARGV("--port", "3000", cfgflag), env_port, err),
        0);
    CHECK_EQ_INT(c.port, 3000);
    CHECK_EQ_INT(c.ctx, 2048);
    /* env alone beats defaults */
    CHECK_EQ_INT(parse(&c, ARGC("-m", "x.gguf"), ARGV("-m", "x.gguf"), env_port, err), 0);
    CHECK_EQ_INT(c.port, 2000);
    CHECK_EQ_INT(c.threads, 0);
    /* the last flag wins */
    CHECK_EQ_INT(
        parse(&c, ARGC("--port", "1", "--port=2"), ARGV("--port", "1", "--port=2"), env_none, err),
        0);
    CHECK_EQ_INT(c.port, 2);
    /* LFM2_CONFIG names the file when --config is absent; --config wins over it */
    const char *file2 = write_file("q.conf", "port = 4444\n");
    char envcfg[1100];
    snprintf(envcfg, sizeof envcfg, "LFM2_CONFIG=%s", file2);
    char *env_cfg[] = {envcfg, NULL};
    CHECK_EQ_INT(parse(&c, 1, ARGV(NULL), env_cfg, err), 0);
    CHECK_EQ_INT(c.port, 4444);
    CHECK_EQ_INT(parse(&c, ARGC(cfgflag), ARGV(cfgflag), env_cfg, err), 0);
    CHECK_EQ_INT(c.port, 1000);
}

static void test_flags(void) {
    char err[256] = "";
    config c;
    char *env[] = {"LFM2_UNRELATED_KNOB=1", "LFM2=/bin/lfm2", NULL};
    CHECK_EQ_INT(parse(&c,
                       ARGC("-m", "/m/LFM2-350M.gguf", "-t", "2", "-c", "512", "-np", "8", "-b",
                            "64", "--host", "0.0.0.0", "--api-key", "sekret", "--body-limit", "2m",
                            "--log-level", "DEBUG", "--cors", "https://a.example,*",
                            "--drain_timeout", "5", "--idle-timeout=7", "--max-n", "3"),
                       ARGV("-m", "/m/LFM2-350M.gguf", "-t", "2", "-c", "512", "-np", "8", "-b",
                            "64", "--host", "0.0.0.0", "--api-key", "sekret", "--body-limit", "2m",
                            "--log-level", "DEBUG", "--cors", "https://a.example,*",
                            "--drain_timeout", "5", "--idle-timeout=7", "--max-n", "3"),
                       env, err),
                 0);
    CHECK_STR(c.model, "/m/LFM2-350M.gguf");
    CHECK_EQ_INT(c.threads, 2);
    CHECK_EQ_INT(c.ctx, 512);
    CHECK_EQ_INT(c.parallel, 8);
    CHECK_EQ_INT(c.batch, 64);
    CHECK_STR(c.host, "0.0.0.0");
    CHECK_STR(c.api_key, "sekret");
    CHECK_EQ_INT(c.body_limit, 2 * 1048576);
    CHECK_EQ_INT(c.log_level, CONFIG_LOG_DEBUG);
    CHECK_STR(c.cors, "https://a.example,*");
    CHECK_EQ_INT(c.drain_timeout, 5);
    CHECK_EQ_INT(c.idle_timeout, 7);
    CHECK_EQ_INT(c.max_n, 3);
    char idbuf[256];
    CHECK_STR(config_model_id(&c, idbuf, sizeof idbuf), "LFM2-350M");
    CHECK_EQ_INT(config_set(&c, "model", "plain", NULL, err, sizeof err), 0);
    CHECK_STR(config_model_id(&c, idbuf, sizeof idbuf), "plain");
    CHECK_EQ_INT(config_set(&c, "model", "/a/b/x.GGUF", NULL, err, sizeof err), 0);
    CHECK_STR(config_model_id(&c, idbuf, sizeof idbuf), "x");
    CHECK_EQ_INT(config_set(&c, "alias", "my-model", NULL, err, sizeof err), 0);
    CHECK_STR(config_model_id(&c, idbuf, sizeof idbuf), "my-model");
    CHECK_EQ_INT(config_set(&c, "body_limit", "64k", "x", err, sizeof err), 0);
    CHECK_EQ_INT(c.body_limit, 65536);
    CHECK_EQ_INT(config_set(&c, "body-limit", "1GB", "x", err, sizeof err), 0);
    CHECK_EQ_INT(c.body_limit, 1L << 30);
    CHECK_EQ_INT(config_set(&c, "port", "0", "x", err, sizeof err), 0);
    CHECK_EQ_INT(c.port, 0);
    /* help */
    CHECK_EQ_INT(parse(&c, ARGC("--port", "1", "--help"), ARGV("--port", "1", "--help"), env, err),
                 CONFIG_EHELP);
    CHECK_EQ_INT(parse(&c, ARGC("-h"), ARGV("-h"), env, err), CONFIG_EHELP);
}

/* Each bad input: expected code and substrings of the message. */
static void expect_err(int rc, int want, const char *err, const char *s1, const char *s2) {
    CHECK_EQ_INT(rc, want);
    if (s1 && !strstr(err, s1)) {
        fprintf(stderr, "  message '%s' lacks '%s'\n", err, s1);
        CHECK(0);
    }
    if (s2 && !strstr(err, s2)) {
        fprintf(stderr, "  message '%s' lacks '%s'\n", err, s2);
        CHECK(0);
    }
}

static void test_errors(void) {
    char err[256];
    config c;
    char *env[] = {NULL};
    int rc;
    rc = parse(&c, ARGC("--port", "70000"), ARGV("--port", "70000"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--port", "0..65535");
    rc = parse(&c, ARGC("--port=-1"), ARGV("--port=-1"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--port", "0..65535");
    rc = parse(&c, ARGC("--ctx", "4k"), ARGV("--ctx", "4k"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--ctx", "16..1048576");
    rc = parse(&c, ARGC("-t", "many"), ARGV("-t", "many"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "-t", "not a number");
    rc = parse(&c, ARGC("--parallel", "0"), ARGV("--parallel", "0"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--parallel", "1..256");
    rc = parse(&c, ARGC("--body-limit", "5x"), ARGV("--body-limit", "5x"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--body-limit", "suffix");
    rc = parse(&c, ARGC("--body-limit", "2g"), ARGV("--body-limit", "2g"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--body-limit", "out of range");
    rc = parse(&c, ARGC("--log-level", "loud"), ARGV("--log-level", "loud"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--log-level", "error, warn, info, debug");
    rc = parse(&c, ARGC("--host", ""), ARGV("--host", ""), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--host", "empty");
    rc = parse(&c, ARGC("--prot", "1"), ARGV("--prot", "1"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "unknown option", "--prot");
    rc = parse(&c, ARGC("-x"), ARGV("-x"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "unknown option", "-x");
    rc = parse(&c, ARGC("--port"), ARGV("--port"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--port", "needs a value");
    rc = parse(&c, ARGC("model.gguf"), ARGV("model.gguf"), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "unexpected argument", "model.gguf");
    char long_key[400];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    rc = parse(&c, ARGC("--api-key", long_key), ARGV("--api-key", long_key), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "--api-key", "limit is 255");

    char *env_bad[] = {"LFM2_CTX=abc", NULL};
    rc = parse(&c, 1, ARGV(NULL), env_bad, err);
    expect_err(rc, CONFIG_EINVAL, err, "LFM2_CTX", "16..1048576");
    char *env_bad2[] = {"LFM2_QUEUE=-5", NULL};
    rc = parse(&c, 1, ARGV(NULL), env_bad2, err);
    expect_err(rc, CONFIG_EINVAL, err, "LFM2_QUEUE", "0..100000");
    /* a bad env value is not an error when a flag overrides it? it still is: env is read
     * before flags and a typo there should not go unnoticed */
    rc = parse(&c, ARGC("--ctx", "64"), ARGV("--ctx", "64"), env_bad, err);
    expect_err(rc, CONFIG_EINVAL, err, "LFM2_CTX", NULL);

    const char *f1 = write_file("bad1.conf", "port = 8081\n\n# ok\nprot = 9\n");
    char flag[1100];
    snprintf(flag, sizeof flag, "--config=%s", f1);
    rc = parse(&c, ARGC(flag), ARGV(flag), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "bad1.conf:4", "unknown setting 'prot'");
    {
        /* the message lists every setting (each key config_dump prints) */
        char big[1024], dump[4096];
        config d;
        config_defaults(&d);
        rc = config_parse_args(&c, ARGC(flag), ARGV(flag), env, big, sizeof big);
        config_dump(&d, dump, sizeof dump);
        int keys = 0;
        for (char *line = strtok(dump, "\n"); line; line = strtok(NULL, "\n")) {
            char *sp = strchr(line, ' '), want[80];
            if (!sp) continue;
            snprintf(want, sizeof want, " %.*s", (int)(sp - line), line);
            keys++;
            if (!strstr(big, want)) {
                fprintf(stderr, "  message '%s' lacks '%s'\n", big, want);
                CHECK(0);
            }
        }
        CHECK(keys >= 19);
    }
    const char *f2 = write_file("bad2.conf", "ctx = 1\n");
    snprintf(flag, sizeof flag, "--config=%s", f2);
    rc = parse(&c, ARGC(flag), ARGV(flag), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "bad2.conf:1: ctx", "16..1048576");
    const char *f3 = write_file("bad3.conf", "# a comment\nport 8080\n");
    snprintf(flag, sizeof flag, "--config=%s", f3);
    rc = parse(&c, ARGC(flag), ARGV(flag), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "bad3.conf:2", "key = value");
    const char *f4 = write_file("bad4.conf", " = 5\n");
    snprintf(flag, sizeof flag, "--config=%s", f4);
    rc = parse(&c, ARGC(flag), ARGV(flag), env, err);
    expect_err(rc, CONFIG_EINVAL, err, "bad4.conf:1", "missing key");
    snprintf(flag, sizeof flag, "--config=%s/does-not-exist.conf", tmpdir);
    rc = parse(&c, ARGC(flag), ARGV(flag), env, err);
    expect_err(rc, CONFIG_EIO, err, "does-not-exist.conf", "cannot open");
    rc = config_set(&c, "nope", "1", "here", err, sizeof err);
    expect_err(rc, CONFIG_EINVAL, err, "unknown setting 'nope'", NULL);
}

static void test_example_and_text(void) {
    char err[256] = "";
    config c;
    config_defaults(&c);
    /* the shipped example must load cleanly (tests run from the repository root) */
    CHECK_EQ_INT(config_load_file(&c, "config/lfm2.conf.example", err, sizeof err), 0);
    if (err[0] && c.config_file[0] == 0) fprintf(stderr, "  %s\n", err);
    CHECK_STR(c.model, "/models/LFM2-350M-Q4_0.gguf");
    CHECK_EQ_INT(c.port, 8080);

    size_t need = config_usage(NULL, 0);
    char *u = malloc(need + 1);
    CHECK(u && config_usage(u, need + 1) == need);
    const char *names[] = {"LFM2_MODEL",        "LFM2_ALIAS",           "LFM2_HOST",
                           "LFM2_PORT",         "LFM2_PARALLEL",        "LFM2_CTX",
                           "LFM2_THREADS",      "LFM2_BATCH",           "LFM2_API_KEY",
                           "LFM2_QUEUE",        "LFM2_BODY_LIMIT",      "LFM2_MAX_TOKENS",
                           "LFM2_MAX_N",        "LFM2_MAX_CONNECTIONS", "LFM2_DRAIN_TIMEOUT",
                           "LFM2_IDLE_TIMEOUT", "LFM2_KEEPALIVE",       "LFM2_CORS",
                           "LFM2_LOG_LEVEL",    "LFM2_CONFIG",          "--drain-timeout",
                           "-np, --parallel"};
    for (size_t i = 0; u && i < sizeof names / sizeof names[0]; i++)
        if (!strstr(u, names[i])) {
            fprintf(stderr, "  usage lacks %s\n", names[i]);
            CHECK(0);
        }
    free(u);
    strcpy(c.api_key, "topsecret");
    char dump[4096];
    config_dump(&c, dump, sizeof dump);
    CHECK(strstr(dump, "api_key = (set)") != NULL);
    CHECK(strstr(dump, "topsecret") == NULL);
    CHECK(strstr(dump, "port = 8080\n") != NULL);
    CHECK(strstr(dump, "log_level = info\n") != NULL);
    /* truncated output still reports the full length */
    char small[8];
    CHECK(config_dump(&c, small, sizeof small) == strlen(dump));
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s", t && *t ? t : "/tmp");
    test_defaults();
    test_precedence();
    test_flags();
    test_errors();
    test_example_and_text();
    return check_done("test_config");
}
