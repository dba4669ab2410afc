/*
 * Epochs from C: links with -ltslab_malloc, so the library serves its allocations, and drives
 * epochs, scopes and labels through tslab.h; writes the stats JSON to the file named by its
 * argument for the test to check.
 *
 * Inside a scope on the labelled epoch "c-request" the main thread keeps MAIN_KEEP objects
 * and frees MAIN_FREED; a second thread enters the same epoch and keeps THREAD_KEEP. The
 * epoch is closed with those objects live: they must stay readable and be reported as the
 * epoch's live objects. Then every error path of the header is called once. Any failed check
 * prints one line on stderr and exits 1.
 *
 * Usage: epochs STATS_JSON_PATH
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tslab.h"

#define MAIN_KEEP 40
#define MAIN_FREED 60
#define THREAD_KEEP 10
#define OBJ 100

static uint64_t request;
static char *thread_objs[THREAD_KEEP];

static void fail(const char *what, long got) {
    fprintf(stderr, "epochs: %s (got %ld)\n", what, got);
    exit(1);
}

static void expect(int got, int want, const char *what) {
    if (got != want) fail(what, got);
}

static void *thread_main(void *arg) {
    (void)arg;
    expect(tslab_scope_enter(request), TSLAB_OK, "thread scope_enter");
    for (int i = 0; i < THREAD_KEEP; i++) {
        thread_objs[i] = malloc(OBJ);
        if (!thread_objs[i]) fail("thread malloc", i);
        memset(thread_objs[i], 0xB0 + i, OBJ);
    }
    expect(tslab_scope_exit(), TSLAB_OK, "thread scope_exit");
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: epochs STATS_JSON_PATH\n");
        return 2;
    }
    expect(tslab_enabled(), 1, "tslab_enabled");

    uint64_t first = TSLAB_EPOCH_NONE;
    expect(tslab_epoch_current(&first), TSLAB_OK, "epoch_current");
    if (first == TSLAB_EPOCH_NONE) fail("epoch_current gave TSLAB_EPOCH_NONE", 0);
    expect(tslab_epoch_advance(&request), TSLAB_OK, "epoch_advance");
    if (request == first) fail("epoch_advance gave the current id again", 0);
    expect(tslab_set_label(request, "c-request"), TSLAB_OK, "set_label");
    /* A second epoch becomes current: requests outside every scope (stdio, pthread_create)
     * go there, so "c-request" holds exactly what the scopes put in it. */
    uint64_t background = 0;
    expect(tslab_epoch_advance(&background), TSLAB_OK, "second epoch_advance");
    expect(tslab_set_label(background, "c-background"), TSLAB_OK, "set_label background");

    pthread_t t;
    char *kept[MAIN_KEEP];
    char *outside = malloc(OBJ); /* in "c-background", live until the end */
    if (!outside) fail("malloc outside every scope", 0);
    expect(tslab_scope_enter(request), TSLAB_OK, "scope_enter");
    for (int i = 0; i < MAIN_KEEP + MAIN_FREED; i++) {
        char *p = malloc(OBJ);
        if (!p) fail("malloc in scope", i);
        memset(p, i, OBJ);
        if (i < MAIN_KEEP)
            kept[i] = p;
        else
            free(p);
    }
    expect(tslab_scope_exit(), TSLAB_OK, "scope_exit");
    expect(tslab_scope_exit(), TSLAB_ERR_SCOPE, "scope_exit with no scope open");
    if (pthread_create(&t, NULL, thread_main, NULL) != 0) fail("pthread_create", 0);
    pthread_join(t, NULL);

    expect(tslab_epoch_close(request), TSLAB_OK, "epoch_close");
    expect(tslab_epoch_close(request), TSLAB_OK, "epoch_close again");

    /* Objects outlive their epoch. */
    for (int i = 0; i < MAIN_KEEP; i++)
        for (int k = 0; k < OBJ; k++)
            if ((unsigned char)kept[i][k] != (unsigned char)i) fail("kept object changed after close", i);
    for (int i = 0; i < THREAD_KEEP; i++)
        for (int k = 0; k < OBJ; k++)
            if ((unsigned char)thread_objs[i][k] != (unsigned char)(0xB0 + i))
                fail("thread object changed after close", i);

    /* A closed epoch's scope still allocates (from glibc). */
    expect(tslab_scope_enter(request), TSLAB_OK, "scope_enter on a closed epoch");
    char *late = malloc(OBJ);
    if (!late) fail("malloc in a closed epoch's scope", 0);
    memset(late, 1, OBJ);
    free(late);
    expect(tslab_scope_exit(), TSLAB_OK, "scope_exit of the closed epoch");

    /* Every error the header documents that a correct program can provoke. */
    expect(tslab_epoch_current(NULL), TSLAB_ERR_INVALID, "epoch_current(NULL)");
    expect(tslab_epoch_advance(NULL), TSLAB_ERR_INVALID, "epoch_advance(NULL)");
    expect(tslab_set_label(background, NULL), TSLAB_ERR_INVALID, "set_label(NULL)");
    expect(tslab_epoch_close(TSLAB_EPOCH_NONE), TSLAB_ERR_STALE, "epoch_close(NONE)");
    expect(tslab_scope_enter(request + (1000u << 4)), TSLAB_ERR_STALE, "scope_enter of a made-up era");
    expect(tslab_set_label(UINT64_MAX, "x"), TSLAB_ERR_STALE, "set_label(UINT64_MAX)");
    errno = 0;
    expect(tslab_stats_write_fd(-1), TSLAB_ERR_IO, "stats_write_fd(-1)");
    if (errno != EBADF) fail("stats_write_fd(-1) errno", errno);

    /* Stats into a buffer: ask for the size, then give room to spare. */
    int64_t need = tslab_stats_json(NULL, 0);
    if (need <= 0) fail("stats_json size", (long)need);
    char tiny[8] = "unused";
    if (tslab_stats_json(tiny, sizeof tiny) < (int64_t)sizeof tiny || strcmp(tiny, "unused") != 0)
        fail("stats_json wrote into a buffer too small", 0);
    size_t cap = (size_t)need + 65536;
    char *buf = malloc(cap);
    if (!buf) fail("malloc of the stats buffer", 0);
    int64_t len = tslab_stats_json(buf, cap);
    if (len <= 0 || (size_t)len >= cap || buf[len] != '\0' || strlen(buf) != (size_t)len)
        fail("stats_json into the buffer", (long)len);
    FILE *f = fopen(argv[1], "w");
    if (!f || fwrite(buf, 1, (size_t)len, f) != (size_t)len || fclose(f) != 0) fail("writing the stats file", 0);
    free(buf);

    printf("kept=%d freed=%d thread_kept=%d\n", MAIN_KEEP, MAIN_FREED, THREAD_KEEP);
    for (int i = 0; i < MAIN_KEEP; i++) free(kept[i]);
    for (int i = 0; i < THREAD_KEEP; i++) free(thread_objs[i]);
    free(outside);
    return 0;
}
