/*
 * Programs with a bug, to check what the library does with them (links nothing of ours).
 *
 * Usage: misuse double-free    frees a 100-byte block twice, then exits 0
 *        misuse realloc-freed  reallocs a freed 100-byte block (expected: abort)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char *volatile p = malloc(100);
    if (!p) return 3;
    free(p);
    if (strcmp(argv[1], "double-free") == 0) {
        free(p);
        puts("survived");
        return 0;
    }
    if (strcmp(argv[1], "realloc-freed") == 0) {
        char *q = realloc(p, 200);
        printf("realloc returned %p\n", (void *)q);
        return 0;
    }
    return 2;
}
