/* main.c — the qkv command: `qkv <command> [--options]`, one file per command (cmd_*.c).
 * A thin client of the public API (include/qkv.h): anything the command needs, a library user can do.
 * Errors: one line on stderr ("qkv: <what>: <why>"), a hint where one helps, and a non-zero exit. */
#include <stdio.h>
#include <string.h>

#include "qkv.h"
#include "commands.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"train", qkv_cmd_train, "train or fine-tune a GPT language model on text (HF checkpoints)"},
    {"generate", qkv_cmd_generate, "generate text from a model directory (KV cache, sampling, streaming)"},
    {"tokenize", qkv_cmd_tokenize, "text -> token ids with a model's or tokenizer directory's tokenizer"},
    {"bench", qkv_cmd_bench, "GPT-2 124M speed and memory: training step, prompt forward, generation"},
    {"selftest", qkv_cmd_selftest, "quick numerical self-check of the kernels, ops and blocks"},
};

static void usage(FILE *f) {
    fprintf(f, "qkv %s — transformers in C: build, train, run and look inside attention models\n\n", QKV_VERSION);
    fprintf(f, "usage: qkv <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions:\n  --help     this text (also: qkv <command> --help)\n  --version  print the version\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("qkv %s\n", QKV_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "qkv: unknown command '%s'\nhint: qkv --help lists the commands\n", argv[1]);
    return 2;
}
