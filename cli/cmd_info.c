#include "cli.h"

/* Placeholder until the info command lands. */
int cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack info: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
