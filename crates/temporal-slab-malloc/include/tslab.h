/*
 * tslab.h: epochs, scopes, labels and stats of temporal-slab for C programs.
 *
 * The functions live in libtslab_malloc.so, which also provides malloc, free, calloc, realloc,
 * reallocarray, posix_memalign, aligned_alloc, memalign, valloc, pvalloc and
 * malloc_usable_size. Either link with -ltslab_malloc (the library then serves the program's
 * allocations, as under LD_PRELOAD), or keep LD_PRELOAD and find these functions with
 * dlsym(RTLD_DEFAULT, "tslab_epoch_current") and so on. docs/ld-preload.md is the guide.
 *
 * What goes where: requests of at most 768 bytes with alignment at most 16 are temporal-slab
 * objects, in this thread's innermost scope's epoch (tslab_scope_enter) or, outside any scope,
 * in the current epoch (tslab_epoch_current, moved on by tslab_epoch_advance). Everything
 * else, and every request the slab refuses (its epoch is closed, the ring is full), goes to
 * glibc. free() finds the owner from the address: freeing on any thread, at any time, is fine.
 *
 * Epoch ids are uint64_t: (era << 4) | slot, the ring slot (0..15) in the low 4 bits and the
 * era (from 1, only growing) above. 0 (TSLAB_EPOCH_NONE) is never an id. Every function that
 * takes an id checks it against the era its slot holds now: an id whose slot has been reopened
 * since, or any value that was never an id, is TSLAB_ERR_STALE, never undefined behaviour.
 *
 * Every function is thread-safe. Return codes: TSLAB_OK (0) or one of the negative
 * TSLAB_ERR_* below; errno is set only with TSLAB_ERR_IO.
 */
#ifndef TSLAB_H
#define TSLAB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Success. */
#define TSLAB_OK 0
/* temporal-slab does not serve this process: TSLAB_DISABLE is set, the allocator could not
 * be created, or the library is not initialised yet. */
#define TSLAB_ERR_DISABLED (-1)
/* The epoch id is stale (its ring slot was reopened since) or was never an id. */
#define TSLAB_ERR_STALE (-2)
/* tslab_epoch_advance: every other ring slot holds an epoch that has not drained (still
 * ACTIVE, or CLOSING with live objects). Nothing changed; close or free something first. */
#define TSLAB_ERR_RING_FULL (-3)
/* A required pointer argument is NULL. */
#define TSLAB_ERR_INVALID (-4)
/* tslab_scope_enter with this thread's scope stack full, or tslab_scope_exit with no scope
 * open. */
#define TSLAB_ERR_SCOPE (-5)
/* Writing the stats failed; errno says why. */
#define TSLAB_ERR_IO (-6)
/* Any other error the allocator reported. */
#define TSLAB_ERR_OTHER (-7)

/* Never an epoch id. */
#define TSLAB_EPOCH_NONE ((uint64_t)0)

/* 1 when temporal-slab serves this process's small allocations, 0 when all go to glibc. */
int tslab_enabled(void);

/* Writes the current epoch's id to *out. Errors: DISABLED, INVALID (out is NULL). */
int tslab_epoch_current(uint64_t *out);

/* Opens a new epoch, makes it current (requests outside any scope go there from now on) and
 * writes its id to *out. The previous epoch stays open until tslab_epoch_close.
 * Errors: DISABLED, INVALID, RING_FULL. */
int tslab_epoch_advance(uint64_t *out);

/* Closes the epoch: no new objects in it (requests for it go to glibc), its empty slabs go
 * back to the kernel. Objects still live stay valid and are reported as the epoch's
 * live_objects in the stats until freed. Closing a closed epoch again is fine. Closing the
 * current epoch sends requests made outside every scope to glibc (each one counted as a
 * refusal) until the next tslab_epoch_advance: advance first, then close the old one.
 * Errors: DISABLED, STALE. */
int tslab_epoch_close(uint64_t epoch);

/* This thread's small requests go to `epoch` until the matching tslab_scope_exit. Scopes
 * nest (the innermost wins) up to a fixed depth. A closed epoch can be entered; its requests
 * then go to glibc. Errors: DISABLED, STALE, SCOPE (stack full). */
int tslab_scope_enter(uint64_t epoch);

/* Leaves this thread's innermost scope. Errors: DISABLED, SCOPE (no scope open). */
int tslab_scope_exit(void);

/* Names the epoch in the stats (the label is copied; at most 31 bytes are kept, bytes that
 * are not UTF-8 become U+FFFD). Errors: DISABLED, STALE, INVALID (label is NULL). */
int tslab_set_label(uint64_t epoch, const char *label);

/* The stats JSON (schema version 1, schemas/stats_v1.schema.json, the document `tslab stats`
 * reads). Returns its length n in bytes, not counting a NUL. When n < cap, buf holds the
 * document and a terminating NUL; otherwise buf is untouched. Call with (NULL, 0) for the
 * size, then with a buffer that has room to spare (the document can grow between calls). The
 * caller owns buf; the library keeps nothing. Negative: an error code (DISABLED, OTHER). */
int64_t tslab_stats_json(char *buf, size_t cap);

/* Writes the stats JSON to the file descriptor (all of it, retrying short writes); the
 * descriptor stays open and the caller's. Errors: DISABLED, IO (errno set), OTHER. */
int tslab_stats_write_fd(int fd);

#ifdef __cplusplus
}
#endif

#endif /* TSLAB_H */
