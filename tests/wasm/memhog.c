// Allocates and touches 1 MiB blocks until malloc fails, then reports how far it got.
// The blocks are kept in a list and summed so the compiler cannot drop them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
  struct block *next;
  char data[(1 << 20) - sizeof(struct block *)];
};

int main(void) {
  struct block *head = NULL;
  int mib = 0;
  while (mib < 4096) {
    struct block *b = malloc(sizeof *b);
    if (!b) break;
    memset(b->data, mib & 0xff, sizeof b->data);
    b->next = head;
    head = b;
    mib++;
  }
  unsigned long sum = 0;
  for (struct block *b = head; b; b = b->next) sum += (unsigned char)b->data[0];
  printf("allocated %d MiB (checksum %lu)\n", mib, sum);
  return mib >= 4096 ? 0 : 1;
}
