/* cli.h: the subcommands of the lfm2 binary; each returns the process exit status. */
#ifndef LFM2_CLI_H
#define LFM2_CLI_H
int cmd_info(int argc, char **argv);     /* server/cmd_info.c */
int cmd_tokenize(int argc, char **argv); /* server/cmd_tokenize.c */
int cmd_mkmodel(int argc, char **argv);  /* server/cmd_mkmodel.c */
int cmd_run(int argc, char **argv);      /* server/cmd_run.c */
int cmd_serve(int argc, char **argv);    /* server/cmd_serve.c */
int cmd_quantize(int argc, char **argv); /* server/cmd_quantize.c */
int cmd_bench(int argc, char **argv);    /* server/cmd_bench.c */
#endif
