/* cli.c: helpers the lfm2 subcommands share: integer flags and whole-file reads. */
#include "server/cmd/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "error: %s '%s': expected an integer in [%ld, %ld]\n", opt,
                s ? s : "(missing)", lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

char *cli_read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    if (buf) *len = n;
    return buf;
}

void cli_file_error(const char *path, const char *err) {
    if (!strncmp(err, path, strlen(path)))
        fprintf(stderr, "error: %s\n", err);
    else
        fprintf(stderr, "error: %s: %s\n", path, err);
}
