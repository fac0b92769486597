#include "cli.h"

/* Placeholder until the quantize command lands. */
int cmd_quantize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack quantize: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
