/*  cli.h - the verbs of the floorpost command. Each takes the arguments
    after its name and returns the process exit code: 0 ok, 1 runtime
    failure, 2 usage or configuration error (main.c prints the usage).
    Called on the main thread only.
*/
#ifndef FP_CLI_H
#define FP_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "curve.h"

#include "version.h" /* FP_VERSION */

/* The usage text of every verb (main.c). */
void fp_cli_usage(FILE *f);

int fp_cmd_run(int argc, char **argv);    /* cmd_run.c */
int fp_cmd_send(int argc, char **argv);   /* cmd_clients.c */
int fp_cmd_tail(int argc, char **argv);   /* cmd_clients.c */
int fp_cmd_keygen(int argc, char **argv); /* cmd_clients.c */
int fp_cmd_sinks(int argc, char **argv);  /* cmd_sinks.c */
int fp_cmd_state(int argc, char **argv);  /* cmd_state.c */

/* The CURVE options of send and tail: --server-key FILE (the server's .pub
   or .key) and --key FILE (this client's .key). Both or neither. Returns 0
   (*curve says whether they were given) or 2 after printing the error. */
int fp_cli_client_keys(const char *who, const char *server_file, const char *key_file,
                       char server_z85[FP_CURVE_KEY_Z85 + 1], fp_curve_keypair_t *kp,
                       bool *curve);

/* A number option's value s (NULL: the option was the last argument):
   decimal digits only, no sign, blank or trailing character, within
   min..max. true with *out set; false after printing "floorpost VERB:
   OPTION 'S' is not a decimal number; allowed: MIN..MAX" (or "is too
   large", "is out of range", "needs a value") on stderr: the verb then
   exits 2, as for every usage error (args.c). */
bool fp_cli_number(const char *verb, const char *option, const char *s, uint64_t min,
                   uint64_t max, uint64_t *out);

#endif
