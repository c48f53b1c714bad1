/* pcache.h: the prompt cache: finished sequences' state in host memory, under a byte budget. */
#ifndef LFM2_PCACHE_H
#define LFM2_PCACHE_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "engine/eng.h"

/* An entry holds the state of one finished sequence: its token ids, the attention layers' K/V
 * rows for exactly those positions (eng_seq_kv_read) and conv snapshots (eng_snap_floats each)
 * at chosen positions. A request resumes from the entry sharing its longest token prefix, at the
 * deepest snapshot position not past the match: K/V is valid at any position, conv state only
 * where a snapshot was taken. Entries are plain malloc'd memory, not engine sequences, so the
 * number of conversations remembered is bounded by the budget alone. One thread (the scheduler)
 * uses a pcache; it takes no lock. */
typedef struct pcache pcache;

/* Snapshots collected for one sequence: positions ascending, data[k * snap_floats]. */
typedef struct pcache_snaps {
    int *pos;
    float *data;
    int n, cap;
} pcache_snaps;
/* Room for more snapshots after the n held (the caller writes pos[n..] and data, then raises n).
 * 0, or -1 out of memory (s unchanged). */
int pcache_snaps_reserve(pcache_snaps *s, size_t snap_floats, int more);
void pcache_snaps_free(pcache_snaps *s); /* zeroes s */

/* Why a lookup reused nothing, or where reuse stopped short (metrics label names). */
enum pcache_reason {
    PCACHE_HIT = 0,
    PCACHE_MISS_NO_ENTRY,  /* no entry shares a snapshotted prefix with the prompt */
    PCACHE_MISS_EVICTED,   /* an evicted entry would have served it */
    PCACHE_MISS_DISABLED,  /* the request said cache_prompt: false, or the budget is 0 */
    PCACHE_N_REASONS,
};
const char *pcache_reason_name(int reason); /* "hit", "no_entry", "evicted", "disabled" */

typedef struct pcache_stats {
    uint64_t lookups[PCACHE_N_REASONS]; /* by outcome: [PCACHE_HIT] hits, the rest misses */
    uint64_t rewrites;      /* lookups whose match stopped where the entry had generated <think>:
                               the template rewrote an earlier assistant turn */
    uint64_t tokens_reused; /* prompt tokens restored instead of prefilled */
    uint64_t evictions;     /* entries dropped for room (an entry larger than the budget too) */
    uint64_t bytes;         /* held now */
    uint64_t entries;       /* held now */
} pcache_stats;

/* A cache of at most budget bytes for sequences of e. think_id: the token id of "<think>" (-1 when
 * the vocabulary has none), for the rewrites count. 0, or -1 out of memory. */
int pcache_new(pcache **out, eng *e, size_t budget, int32_t think_id);
void pcache_free(pcache *c); /* NULL is a no-op */

/* Finds the entry with the longest common prefix with ids[0, n) and restores into s (a fresh
 * sequence at position 0) the deepest snapshotted position <= limit; the entry's snapshots at
 * positions <= that position are appended to carry (so the new sequence's own entry keeps them).
 * Returns the position restored (0: nothing reused; s untouched) and the outcome in *reason.
 * Out of memory for carry reuses nothing. */
int pcache_resume(pcache *c, const int32_t *ids, int n, int limit, eng_seq *s, pcache_snaps *carry,
                  int *reason);
/* The position pcache_resume would restore, without restoring or counting anything. */
int pcache_peek(const pcache *c, const int32_t *ids, int n, int limit);
/* Counts a lookup that was not made (cache_prompt false). */
void pcache_count_disabled(pcache *c);

/* Stores the state of s: its eng_seq_pos(s) tokens are a[0, na) then b[0, pos - na), with the
 * snapshots of sa and sb (positions <= pos; either may be NULL) and one taken from s at pos.
 * Entries whose ids are a prefix of the new one's are merged into it (their snapshots kept); when
 * an entry already extends the new one, that entry takes its snapshots and no new entry is made.
 * Evicts by recency weighted by the prefill an entry saves until the new one fits; one larger
 * than the whole budget is not kept. 0, or -1 when it was not stored (out of memory, too large). */
int pcache_insert(pcache *c, const int32_t *a, int na, const int32_t *b, const eng_seq *s,
                  const pcache_snaps *sa, const pcache_snaps *sb);

/* The cache in a file (--cache-dir). The key ties a file to one model file: its size, the hash
 * of its header and tensor table and of the first bytes of every tensor. pcache_save writes
 * every entry (temp file + rename): 0 or -1 with a message. pcache_load adds the entries of
 * the file, oldest first (of a file larger than the budget only the newest entries that fit
 * are kept, and only they are held while reading), and returns by how many entries the cache
 * grew; a missing, stale (another key, version or shape), truncated or corrupt file (a
 * checksum per entry) adds nothing and returns -1 with a message naming the problem. */
uint64_t pcache_model_key(const eng *e);
int pcache_save(const pcache *c, const char *path, uint64_t key, char *err, size_t errlen);
int pcache_load(pcache *c, const char *path, uint64_t key, char *err, size_t errlen);

void pcache_stats_get(const pcache *c, pcache_stats *st);
size_t pcache_budget(const pcache *c);

#endif
