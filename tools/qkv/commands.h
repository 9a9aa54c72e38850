/* commands.h — one entry point per qkv command; argv[0] is the command name. Returns the exit status. */
#ifndef QKV_COMMANDS_H
#define QKV_COMMANDS_H

int qkv_cmd_selftest(int argc, char **argv);

#endif
