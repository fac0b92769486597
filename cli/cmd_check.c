#include "cli.h"

/* Placeholder until the check command lands. */
int cmd_check(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack check: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
