#include "cli.h"

/* Placeholder until the verify command lands. */
int cmd_verify(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack verify: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
