/*
 * fork while other threads allocate: every child must be able to allocate and free at once
 * (no allocator lock inherited from a thread that does not exist in it). Links nothing of ours.
 *
 * THREADS threads malloc/realloc/free slab-sized and larger blocks in a loop; the main thread
 * forks FORKS children, one after another. Each child (with alarm(60), so a deadlocked child
 * dies of SIGALRM instead of hanging) allocates, fills, checks and frees CHILD_BLOCKS blocks,
 * frees some blocks the parent allocated before the fork, and exits with 0. The parent
 * checks each child's status. Output: one summary line; failures: one line on stderr, exit 1.
 *
 * Built with -DTSLAB_EPOCHS (and linked with -ltslab_malloc), one more thread opens and closes
 * epochs and reads the stats in a loop: each of those takes allocator locks (every shard's, in
 * turn), so forks land while a lock is held far more often than with allocation alone.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef TSLAB_EPOCHS
#include "tslab.h"
#endif

#define THREADS 3
#define FORKS 40
#define CHILD_BLOCKS 20000
#define INHERITED 64

static atomic_int stop;

static void fail(const char *what, long n) {
    fprintf(stderr, "fork: %s (%ld)\n", what, n);
    exit(1);
}

static void *churn(void *arg) {
    uint32_t s = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
    void *held[32] = {0};
    while (!atomic_load(&stop)) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        int i = s % 32;
        free(held[i]);
        size_t size = s % 7 == 0 ? 1000 + s % 3000 : 1 + s % 768;
        held[i] = malloc(size);
        if (!held[i]) fail("malloc in a churning thread", (long)size);
        memset(held[i], (int)i, size);
        if (s % 5 == 0) {
            void *q = realloc(held[i], size + 200);
            if (!q) fail("realloc in a churning thread", (long)size);
            held[i] = q;
        }
    }
    for (int i = 0; i < 32; i++) free(held[i]);
    return NULL;
}

#ifdef TSLAB_EPOCHS
static void *epochs(void *arg) {
    (void)arg;
    uint64_t prev = 0;
    if (tslab_epoch_current(&prev) != TSLAB_OK) fail("tslab_epoch_current", 0);
    static char buf[1 << 16];
    for (long n = 0; !atomic_load(&stop); n++) {
        uint64_t next = 0;
        int rc = tslab_epoch_advance(&next);
        if (rc == TSLAB_OK) {
            if (tslab_epoch_close(prev) != TSLAB_OK) fail("tslab_epoch_close", n);
            prev = next;
        } else if (rc != TSLAB_ERR_RING_FULL) {
            fail("tslab_epoch_advance", rc);
        }
        if (n % 8 == 0 && tslab_stats_json(buf, sizeof buf) <= 0) fail("tslab_stats_json", n);
    }
    return NULL;
}
#endif

static int child(char **inherited) {
    alarm(60);
    for (int i = 0; i < INHERITED; i += 2) free(inherited[i]);
    /* Held in batches, so the slab's slow path (which takes its shard's lock) runs often. */
    static unsigned char *batch[1000];
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        size_t size = 1 + (size_t)(i * 37) % 1500;
        unsigned char *p = malloc(size);
        if (!p) return 2;
        memset(p, i & 0xff, size);
        for (size_t k = 0; k < size; k++)
            if (p[k] != (unsigned char)(i & 0xff)) return 3;
        batch[i % 1000] = p;
        if (i % 1000 == 999)
            for (int k = 0; k < 1000; k++) free(batch[k]);
    }
#ifdef TSLAB_EPOCHS
    /* Each of these takes every allocator lock in turn. */
    static char buf[1 << 16];
    if (tslab_stats_json(buf, sizeof buf) <= 0) return 4;
    uint64_t e = 0;
    int rc = tslab_epoch_advance(&e);
    if (rc != TSLAB_OK && rc != TSLAB_ERR_RING_FULL) return 5;
#endif
    return 0;
}

int main(void) {
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&threads[i], NULL, churn, (void *)(uintptr_t)(i + 1)) != 0)
            fail("pthread_create", i);
#ifdef TSLAB_EPOCHS
    pthread_t epoch_thread;
    if (pthread_create(&epoch_thread, NULL, epochs, NULL) != 0) fail("pthread_create", -1);
#endif
    int ok = 0;
    for (int f = 0; f < FORKS; f++) {
        char *inherited[INHERITED];
        for (int i = 0; i < INHERITED; i++) {
            inherited[i] = malloc(100 + i);
            if (!inherited[i]) fail("malloc before fork", i);
        }
        pid_t pid = fork();
        if (pid < 0) fail("fork", f);
        if (pid == 0) _exit(child(inherited));
        int status = 0;
        if (waitpid(pid, &status, 0) != pid) fail("waitpid", f);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail("child did not exit with 0 (status word)", status);
        ok++;
        for (int i = 0; i < INHERITED; i++) free(inherited[i]);
        usleep(2000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
#ifdef TSLAB_EPOCHS
    pthread_join(epoch_thread, NULL);
#endif
    printf("forks=%d children_ok=%d\n", FORKS, ok);
    return 0;
}
