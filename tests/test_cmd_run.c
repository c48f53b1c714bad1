/* test_cmd_run.c: `lfm2 run` prints every token's whole text, however long its piece is. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "engine/gguf.h"
#include "server/cmd/cli.h"
#include "tests/check.h"

#define LONG_PIECE 5000 /* longer than any fixed token buffer of a few KiB */

static char tmpdir[256];

/* Runs `lfm2 run` with args, stdout into a malloc'd string (the caller frees); NULL on failure. */
static char *run_capture(int argc, char **argv) {
    char path[300];
    snprintf(path, sizeof path, "%s/out.txt", tmpdir);
    fflush(stdout);
    int saved = dup(1);
    FILE *f = freopen(path, "w", stdout);
    int rc = f ? cmd_run(argc, argv) : -1;
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    if (rc != 0) {
        fprintf(stderr, "lfm2 run exited %d\n", rc);
        return NULL;
    }
    size_t n;
    unsigned char *p = check_slurp(path, &n);
    char *s = p ? realloc(p, n + 1) : NULL;
    if (!s) {
        free(p);
        return NULL;
    }
    s[n] = 0;
    return s;
}

/* A copy of src whose token id's text is `piece`; the merges that build the old text, or use it,
 * are dropped so the vocab stays consistent. Same weights, so the same greedy path. */
static int write_with_piece(const char *src, const char *dst, int32_t id, const char *piece) {
    char err[256];
    gguf *g = NULL;
    gguf_writer *w = gguf_writer_new();
    const char **strs = NULL;
    size_t *lens = NULL;
    int rc = -1;
    if (!w || gguf_open(&g, src, err, sizeof err) < 0) goto done;
    gguf_writer_set_alignment(w, gguf_alignment(g));
    int64_t ti = gguf_find_key(g, "tokenizer.ggml.tokens");
    size_t old_len;
    const char *old = gguf_arr_str(g, ti, (uint64_t)id, &old_len);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *key = gguf_kv_key(g, i);
        int merges = !strcmp(key, "tokenizer.ggml.merges");
        if (i != ti && !merges) {
            if (gguf_writer_copy_kv(w, g, i) < 0) goto done;
            continue;
        }
        uint64_t n = gguf_arr_len(g, i), k = 0;
        strs = malloc(n * sizeof *strs);
        lens = malloc(n * sizeof *lens);
        if (!strs || !lens) goto done;
        for (uint64_t j = 0; j < n; j++) {
            size_t l;
            const char *s = gguf_arr_str(g, i, j, &l);
            if (merges) {
                const char *sp = memchr(s, ' ', l);
                size_t a = sp ? (size_t)(sp - s) : l, b = sp ? l - a - 1 : 0;
                int uses = (a == old_len && !memcmp(s, old, a)) ||
                           (b == old_len && !memcmp(sp + 1, old, b)) ||
                           (a + b == old_len && !memcmp(s, old, a) && !memcmp(sp + 1, old + a, b));
                if (uses) continue;
            } else if (j == (uint64_t)id) {
                s = piece, l = strlen(piece);
            }
            strs[k] = s, lens[k++] = l;
        }
        if (gguf_writer_set_arr_str(w, key, strs, lens, k) < 0) goto done;
        free(strs), free(lens);
        strs = NULL, lens = NULL;
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes) < 0)
            goto done;
    }
    rc = gguf_writer_write(w, dst, err, sizeof err);
done:
    if (rc < 0) fprintf(stderr, "write_with_piece: %s\n", err);
    free(strs), free(lens);
    gguf_writer_free(w);
    gguf_close(g);
    return rc < 0 ? -1 : 0;
}

static void test_long_piece(void) {
    const char *src = "tests/data/models/mini-Q8_0.gguf";
    char dst[300];
    snprintf(dst, sizeof dst, "%s/long.gguf", tmpdir);
    char *json_args[] = {"run",    "-m", (char *)src,    "-p",     "Hello world", "-n", "1",
                         "--temp", "0",  "--ignore-eos", "--json", "-t",          "1",  NULL};
    char *out = run_capture(13, json_args);
    CHECK(out != NULL);
    int id = -1;
    if (out) CHECK_EQ_INT(sscanf(out, "{\"id\":%d", &id), 1);
    free(out);
    if (id < 0) return;
    /* the greedy token gets a piece of LONG_PIECE bytes: 'a'..'z' repeated */
    char *piece = malloc(LONG_PIECE + 1);
    CHECK(piece != NULL);
    if (!piece) return;
    for (int i = 0; i < LONG_PIECE; i++)
        piece[i] = (char)('a' + i % 26);
    piece[LONG_PIECE] = 0;
    CHECK_EQ_INT(write_with_piece(src, dst, id, piece), 0);
    char *text_args[] = {"run", "-m",           dst,  "-p", "Hello world", "-n", "1", "--temp",
                         "0",   "--ignore-eos", "-t", "1",  NULL};
    out = run_capture(12, text_args);
    CHECK(out != NULL);
    if (out) {
        /* the whole piece, then the newline the text mode ends with */
        CHECK_EQ_INT(strlen(out), LONG_PIECE + 1);
        CHECK(!strncmp(out, piece, LONG_PIECE));
    }
    free(out);
    json_args[2] = dst;
    out = run_capture(13, json_args);
    CHECK(out != NULL);
    if (out) {
        char *t = strstr(out, "\"text\":\"");
        CHECK(t && !strncmp(t + 8, piece, LONG_PIECE) && t[8 + LONG_PIECE] == '"');
        int id2 = -1;
        CHECK_EQ_INT(sscanf(out, "{\"id\":%d", &id2), 1);
        CHECK_EQ_INT(id2, id);
    }
    free(out);
    free(piece);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_cmd_run.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_long_piece();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not clean %s\n", tmpdir);
    return check_done("test_cmd_run");
}
