/* commands.h — one entry point per qkv command; argv[0] is the command name. Returns the exit status. */
#ifndef QKV_COMMANDS_H
#define QKV_COMMANDS_H

int qkv_cmd_selftest(int argc, char **argv);
int qkv_cmd_train(int argc, char **argv);    /* cmd_train.c */
int qkv_cmd_generate(int argc, char **argv); /* cmd_generate.c */
int qkv_cmd_tokenize(int argc, char **argv); /* cmd_tokenize.c */
int qkv_cmd_bench(int argc, char **argv);    /* cmd_bench.c */

#endif
