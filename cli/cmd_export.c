#include "cli.h"

/* Placeholder until the export command lands. */
int cmd_export(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "llmpack export: not built yet\n");
    return CLI_EXIT_RUNTIME;
}
