#include "cli.h"

/* Placeholder until the generate command lands. */
int cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack generate: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
