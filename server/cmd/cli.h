/* cli.h: the subcommands of the lfm2 binary; each returns the process exit status. */
#ifndef LFM2_CLI_H
#define LFM2_CLI_H
#include <stdio.h>

int cmd_info(int argc, char **argv);     /* server/cmd/cmd_info.c */
int cmd_tokenize(int argc, char **argv); /* server/cmd/cmd_tokenize.c */
int cmd_mkmodel(int argc, char **argv);  /* server/cmd/cmd_mkmodel.c */
int cmd_run(int argc, char **argv);      /* server/cmd/cmd_run.c */
int cmd_serve(int argc, char **argv);    /* server/cmd/cmd_serve.c */
int cmd_quantize(int argc, char **argv); /* server/cmd/cmd_quantize.c */
int cmd_bench(int argc, char **argv);    /* server/cmd/cmd_bench.c */

/* Shared by the subcommands (server/cmd/cli.c); these print their errors, as CLI code may. */
/* Parses the decimal integer s (the value of flag opt) into [lo, hi]; on failure prints
 * "error: OPT 'S': expected an integer in [LO, HI]" to stderr and returns -1. */
int cli_parse_long(const char *opt, const char *s, long lo, long hi, long *out);
/* Reads f to its end (f stays open) into a malloc'd buffer the caller frees; NULL on a read
 * error or out of memory. The bytes are not NUL-terminated: *len says how many. */
char *cli_read_all(FILE *f, size_t *len);
/* Prints "error: PATH: ERR" for a file that could not be used; an err that already starts with
 * the path (the open and mmap failures of gguf_open) is printed once, as "error: ERR". */
void cli_file_error(const char *path, const char *err);
#endif
