/* cmd_tokenize.c: `lfm2 tokenize -m FILE [--no-bos] [--no-special] TEXT`: token ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tok.h"
#include "server/cmd/cli.h"

static void tokenize_usage(FILE *f) {
    fprintf(
        f,
        "usage: lfm2 tokenize -m FILE [--no-bos] [--no-special] [--pieces] (TEXT | -f TEXTFILE)\n"
        "  Prints the token ids of TEXT separated by spaces, then a newline.\n"
        "  BOS is prepended when the vocab asks for it (tokenizer.ggml.add_bos_token) unless\n"
        "  --no-bos; special tokens written as text (<|im_start|>) become single tokens\n"
        "  unless --no-special. -f reads the text (any bytes) from a file, '-' for stdin.\n"
        "  --pieces prints one 'id<TAB>piece' line per token instead (piece C-escaped).\n"
        "  --batch reads lines 'F HEX' from stdin (F: N plain, S special, B BOS, A both; HEX the\n"
        "  text's bytes) and prints one line of ids for each: the protocol of\n"
        "  tests/oracle/tok_oracle.c, for differential tests against llama.cpp.\n"
        "  Only the tokenizer metadata is read: no weights are loaded.\n");
}

static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static int hexval(int c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* --batch: "F HEX" lines in, one line of ids out per line. */
static int tokenize_batch(const char *path) {
    char err[512];
    gguf *g = NULL;
    tok *t = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0 || tok_new(&t, g, err, sizeof err) < 0) {
        cli_file_error(path, err);
        gguf_close(g);
        return 1;
    }
    char *line = NULL, *text = NULL;
    int32_t *ids = NULL;
    size_t cap = 0;
    ssize_t got;
    int status = 0;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = 0;
        size_t n = got >= 2 ? (size_t)(got - 2) / 2 : 0;
        bool ok = got >= 2 && strchr("NSBA", line[0]) && line[1] == ' ' && (got - 2) % 2 == 0;
        char *nt = ok ? realloc(text, n + 1) : NULL;
        if (nt) text = nt;
        for (size_t i = 0; ok && nt && i < n; i++) {
            int hi = hexval(line[2 + 2 * i]), lo = hexval(line[3 + 2 * i]);
            if (hi < 0 || lo < 0) ok = false;
            text[i] = (char)(hi * 16 + lo);
        }
        if (!ok || !nt) {
            fprintf(stderr, "error: stdin: bad line (want 'F HEX', F one of N S B A)\n");
            status = 1;
            break;
        }
        bool special = line[0] == 'S' || line[0] == 'A',
             bos = (line[0] == 'B' || line[0] == 'A') && tok_add_bos(t);
        int k = tok_encode(t, text, n, bos, special, NULL, 0);
        int32_t *ni = k >= 0 ? realloc(ids, sizeof *ids * ((size_t)k + 1)) : NULL;
        if (!ni) {
            fprintf(stderr, "error: tokenizing failed\n");
            status = 1;
            break;
        }
        ids = ni;
        tok_encode(t, text, n, bos, special, ids, k);
        for (int i = 0; i < k; i++)
            printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    }
    if (fflush(stdout)) status = 1;
    free(line);
    free(text);
    free(ids);
    tok_free(t);
    gguf_close(g);
    return status;
}

int cmd_tokenize(int argc, char **argv) {
    const char *path = NULL, *text = NULL, *file = NULL;
    bool bos = true, special = true, pieces = false, batch = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model") ||
                   !strcmp(argv[i], "-f") || !strcmp(argv[i], "--file")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s needs a file argument\n", argv[i]);
                return 2;
            }
            if (argv[i][1] == 'm' || argv[i][2] == 'm')
                path = argv[++i];
            else
                file = argv[++i];
        } else if (!strcmp(argv[i], "--no-bos")) {
            bos = false;
        } else if (!strcmp(argv[i], "--no-special")) {
            special = false;
        } else if (!strcmp(argv[i], "--pieces")) {
            pieces = true;
        } else if (!strcmp(argv[i], "--batch")) {
            batch = true;
        } else if (!strcmp(argv[i], "--")) {
            if (i + 1 < argc && !text) text = argv[++i];
            if (i + 1 < argc) {
                fprintf(stderr, "error: unexpected argument '%s' (quote TEXT as one argument)\n",
                        argv[i + 1]);
                return 2;
            }
            break;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "error: unknown option '%s'\n", argv[i]);
            tokenize_usage(stderr);
            return 2;
        } else if (text) {
            fprintf(stderr, "error: unexpected argument '%s' (quote TEXT as one argument)\n",
                    argv[i]);
            return 2;
        } else {
            text = argv[i];
        }
    }
    if (path && batch && !text && !file) return tokenize_batch(path);
    if (!path || (!text && !file) || (text && file) || batch) {
        fprintf(stderr, "error: %s\n",
                !path   ? "-m FILE is required"
                : batch ? "--batch reads its texts from stdin: give no TEXT and no -f"
                        : "give either TEXT or -f TEXTFILE");
        tokenize_usage(stderr);
        return 2;
    }
    size_t len = text ? strlen(text) : 0;
    char *owned = NULL;
    if (file) {
        FILE *f = strcmp(file, "-") ? fopen(file, "rb") : stdin;
        owned = f ? cli_read_all(f, &len) : NULL;
        if (f && f != stdin) fclose(f);
    }
    if (file && !owned) {
        fprintf(stderr, "error: cannot read '%s'\n", file);
        return 1;
    }
    if (file) text = owned;

    char err[512];
    gguf *g = NULL;
    tok *t = NULL;
    int32_t *ids = NULL;
    int status = 1;
    if (gguf_open(&g, path, err, sizeof err) < 0 || tok_new(&t, g, err, sizeof err) < 0) {
        cli_file_error(path, err);
        goto done;
    }
    bool add_bos = bos && tok_add_bos(t);
    int n = tok_encode(t, text, len, add_bos, special, NULL, 0);
    if (n >= 0 && (ids = malloc(sizeof *ids * ((size_t)n + 1))) != NULL)
        n = tok_encode(t, text, len, add_bos, special, ids, n);
    if (n < 0 || !ids) {
        fprintf(stderr, "error: tokenizing failed (%s)\n",
                n == TOK_ERR_TOO_LONG ? "text too long" : "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (pieces) {
            size_t pl;
            const char *p = tok_piece(t, ids[i], &pl);
            printf("%d\t", ids[i]);
            print_escaped(p, pl);
            putchar('\n');
        } else {
            printf(i ? " %d" : "%d", ids[i]);
        }
    }
    if (!pieces) putchar('\n');
    status = fflush(stdout) ? 1 : 0;
done:
    free(ids);
    free(owned);
    tok_free(t);
    gguf_close(g);
    return status;
}
