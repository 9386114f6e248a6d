// Prints its arguments, the environment variables named KUASAR_*, and a line on stderr.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

int main(int argc, char **argv) {
  for (int i = 0; i < argc; i++) printf("arg[%d]=%s\n", i, argv[i]);
  for (char **e = environ; *e; e++) {
    if (strncmp(*e, "KUASAR_", 7) == 0) printf("env %s\n", *e);
  }
  fprintf(stderr, "to stderr\n");
  return argc > 1 && strcmp(argv[1], "fail") == 0 ? 7 : 0;
}
