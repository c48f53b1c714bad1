/* tok_oracle.c: llama.cpp's tokenizer on raw bytes (hex lines in, ids out), for tokenizer goldens.
 * Built and run by gen_tok_golden.mjs against the libllama inside node-llama-cpp; never part of
 * the product or the unit tests. Needed because JavaScript strings cannot carry invalid UTF-8.
 * Input: one line per case, "F HEX": F is N (plain), S (parse special tokens), B (add_special,
 * i.e. BOS when the vocab asks for it) or A (both); HEX is the text, two digits a byte.
 * Output: one line per case with the ids separated by spaces.
 * With a second argument "pieces": prints every token's llama_token_to_piece instead, one line
 * per id: "ID TAB HEX(special=false) TAB HEX(special=true)". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
    (void)level, (void)text, (void)ud;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 2 && !(argc == 3 && !strcmp(argv[2], "pieces"))) {
        fprintf(stderr, "usage: tok_oracle MODEL.gguf [pieces] < cases\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "tok_oracle: cannot load %s\n", argv[1]);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    if (argc == 3) {
        char piece[4096];
        for (int id = 0; id < llama_vocab_n_tokens(vocab); id++) {
            printf("%d", id);
            for (int special = 0; special < 2; special++) {
                int k = llama_token_to_piece(vocab, id, piece, sizeof piece, 0, special);
                printf("\t");
                for (int i = 0; i < k; i++)
                    printf("%02x", (unsigned char)piece[i]);
            }
            printf("\n");
        }
        llama_model_free(model);
        return 0;
    }
    size_t cap = 1 << 16;
    char *line = malloc(cap);
    char *bytes = NULL;
    llama_token *ids = NULL;
    size_t n_line = 0;
    ssize_t got;
    while ((got = getline(&line, &n_line, stdin)) > 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = 0;
        if (got < 2) continue;
        int special = line[0] == 'S' || line[0] == 'A', add = line[0] == 'B' || line[0] == 'A';
        const char *hex = line + 2;
        size_t n = strlen(hex) / 2;
        bytes = realloc(bytes, n + 1);
        for (size_t i = 0; i < n; i++)
            bytes[i] = (char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
        int max = (int)n + 8;
        ids = realloc(ids, sizeof *ids * (size_t)max);
        int k = llama_tokenize(vocab, bytes, (int)n, ids, max, add, special);
        if (k < 0) {
            max = -k;
            ids = realloc(ids, sizeof *ids * (size_t)max);
            k = llama_tokenize(vocab, bytes, (int)n, ids, max, add, special);
        }
        for (int i = 0; i < k; i++)
            printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        fflush(stdout);
    }
    free(line);
    free(bytes);
    free(ids);
    llama_model_free(model);
    return 0;
}
