// Copies each file named by an argument (or stdin without arguments) to stdout.
#include <stdio.h>

static int copy(FILE *f) {
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
  return ferror(f) ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return copy(stdin);
  for (int i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "r");
    if (!f) {
      perror(argv[i]);
      return 2;
    }
    int rc = copy(f);
    fclose(f);
    if (rc) return rc;
  }
  return 0;
}
