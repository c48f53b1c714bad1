/* main.c: the lfm2 binary: dispatches to its subcommands (see cli.h). */
#include <stdio.h>
#include <string.h>
#include "server/cmd/cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"info", cmd_info, "info -m FILE: architecture, shapes, layers, tensor types, tokenizer"},
    {"tokenize", cmd_tokenize, "tokenize -m FILE [--no-bos] [--no-special] TEXT: token ids"},
    {"mkmodel", cmd_mkmodel, "mkmodel --preset P [--type T] [--seed S] -o OUT: synthetic model"},
    {"run", cmd_run, "run -m FILE -p TEXT [-n N] [--temp T] [--seed S] [--json]: generate"},
    {"serve", cmd_serve, "serve -m FILE [--host H] [--port P] [--parallel N] [--config F]: OpenAI HTTP server"},
    {"quantize", cmd_quantize, "quantize IN.gguf OUT.gguf TYPE [-t N]: convert weights (q4_k_m, q8_0, f16...)"},
    {"bench", cmd_bench, "bench -m FILE [-p 512] [-n 128] [-b 1,4,8,16] [-t N] [--json]: speed"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: lfm2 COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) fprintf(f, "  %s\n", cmds[i].help);
    fprintf(f, "\n'lfm2 COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
