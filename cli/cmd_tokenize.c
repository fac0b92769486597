#include "cli.h"

/* Placeholder until the tokenize command lands. */
int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack tokenize: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
