#include "cli.h"

/* Placeholder until the convert command lands. */
int cmd_convert(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack convert: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
