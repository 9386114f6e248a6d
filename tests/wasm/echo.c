// Prints its arguments, the environment variables named KUASAR_*, and a line on stderr;
// with "lines N", N lines of output and nothing else; with "sleep N", a line, then nothing for
// N seconds.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
  // "lines N": N lines of 1000 'x' (a flood of output for the reliability tests).
  if (argc > 2 && strcmp(argv[1], "lines") == 0) {
    static char buf[1 << 16];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    char line[1001];
    memset(line, 'x', 1000);
    line[1000] = '\n';
    for (long n = atol(argv[2]); n > 0; n--) fwrite(line, 1, sizeof line, stdout);
    return 0;
  }
  // "sleep N": a running container that does nothing (the benchmarks' idle pods).
  if (argc > 2 && strcmp(argv[1], "sleep") == 0) {
    printf("sleeping %s\n", argv[2]);
    fflush(stdout);
    sleep((unsigned)atol(argv[2]));
    return 0;
  }
  for (int i = 0; i < argc; i++) printf("arg[%d]=%s\n", i, argv[i]);
  for (char **e = environ; *e; e++) {
    if (strncmp(*e, "KUASAR_", 7) == 0) printf("env %s\n", *e);
  }
  fprintf(stderr, "to stderr\n");
  return argc > 1 && strcmp(argv[1], "fail") == 0 ? 7 : 0;
}
