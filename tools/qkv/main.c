/* main.c — the qkv command: dispatches `qkv <verb>` to one file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "qkv.h"

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("qkv %s\n", QKV_VERSION);
        return 0;
    }
    printf("usage: qkv <command>\n");
    return 0;
}
