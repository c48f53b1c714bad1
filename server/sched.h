/* sched.h: the continuous-batching scheduler: one thread owns the engine and runs eng_step. */
#ifndef LFM2_SCHED_H
#define LFM2_SCHED_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "engine/eng.h"
#include "engine/sample.h"
#include "server/metrics.h"
#include "server/pcache.h"

/* Error codes (negative), with a message in the caller's err buffer. */
enum {
    SCHED_EINVAL = -1, /* bad job (no prompt, n < 1, prompt longer than the context...) */
    SCHED_ENOMEM = -2,
    SCHED_EFULL = -3, /* the waiting queue is at its bound: answer 503 + Retry-After */
    SCHED_ECTX = -4,  /* prompt (+ room for one token) does not fit the per-sequence context */
    SCHED_ESTOP = -5, /* the scheduler is draining or stopped: no new work */
};

typedef struct sched_opts {
    int parallel;      /* sequences alive at once (a job with n choices uses n); default 4 */
    int n_ctx;         /* context per sequence; 0 = the engine default */
    int queue_max;     /* jobs waiting beyond the running ones; default 64 */
    int prefill_chunk; /* most prompt tokens one job feeds per step; default 256 */
    /* realloc for the scheduler's own buffers (the event queue, the events' text and logprob
     * records); NULL = realloc. What it returns is released with free(). It is called from the
     * submitting thread and the scheduler thread, so it must be thread-safe. Tests pass one that
     * fails, to show that running out of memory loses no START, FINISH, ERROR or DONE event. */
    void *(*realloc_fn)(void *p, size_t n);
    /* The prompt cache (server/pcache.h): bytes of finished sequences' state kept for requests
     * that share a prefix with them; 0 = off. */
    size_t cache_bytes;
    int snap_every; /* conv snapshot every this many tokens of prefill or generation; 0 = 256 */
    const char *cache_dir; /* NULL/"": none; else sched_new reads the cache from
                              DIR/lfm2-prompt-cache.bin and sched_cache_save writes it there */
} sched_opts;

/* One request's work. The scheduler takes ownership of the heap-allocated job in sched_submit
 * (also on error) and frees it with sched_job_free. */
typedef struct sched_job {
    int32_t *prompt; /* n_prompt token ids (malloc'd) */
    int n_prompt;
    int n_choices;      /* >= 1: sequences forked from the prefilled prompt */
    int max_tokens;     /* per choice; <= 0: until the context is full */
    sample_params samp; /* samp.bias points at bias below; seed + choice index per choice */
    sample_bias *bias;  /* malloc'd, samp.n_bias entries */
    char *stop[5];      /* malloc'd stop strings, never shown in the output: the request's (up to 4)
                         * and <|tool_call_end|> for chat jobs that end at their first call */
    int n_stop;
    bool want_logprobs; /* emit sched_tokinfo with every text event */
    bool no_cache;      /* neither resume from nor store into the prompt cache */
    int32_t *bounds;    /* malloc'd, n_bounds ascending positions in [1, n_prompt] where a
                           message of the prompt ends: the cache snapshots the state there */
    int n_bounds;
    int32_t show_special[4]; /* control tokens whose text is part of the output (chat: <think>,
                              * </think>, <|tool_call_start|>, <|tool_call_end|>) */
    int n_show_special;
} sched_job;
void sched_job_free(sched_job *j); /* NULL is a no-op */

enum sched_ev_kind {
    SCHED_EV_START = 1, /* the job joined the batch (its stream may send headers now) */
    SCHED_EV_TEXT,      /* text for one choice (UTF-8 complete, stop strings withheld) */
    SCHED_EV_FINISH,    /* one choice finished: finish is SCHED_FINISH_* */
    SCHED_EV_DONE,      /* the whole job is over: usage counts are final; last event of a job */
    SCHED_EV_ERROR,     /* the job failed (e.g. no memory for its text) or was ended (drain
                           timeout): message; then only DONE */
};
enum sched_finish { SCHED_FINISH_STOP = 1, SCHED_FINISH_LENGTH = 2 };

typedef struct sched_tokinfo { /* one generated token, for logprobs */
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[SAMPLE_MAX_TOP];
    float top_logprob[SAMPLE_MAX_TOP];
    size_t off; /* bytes of the choice's text before this token's (internal: stop strings) */
} sched_tokinfo;

typedef struct sched_event {
    uint64_t job; /* id given by sched_submit */
    int kind;     /* enum sched_ev_kind */
    int index;    /* choice index for TEXT and FINISH */
    char *text;   /* TEXT: malloc'd bytes (freed by sched_event_clear) */
    size_t len;
    sched_tokinfo *toks; /* TEXT with want_logprobs: malloc'd, n_toks entries */
    int n_toks;
    int finish;        /* FINISH */
    int n_prompt;      /* DONE: prompt tokens */
    int n_cached;      /* DONE: prompt tokens restored from the prompt cache, not prefilled */
    int n_completion;  /* DONE: generated tokens over all choices */
    char message[256]; /* ERROR */
} sched_event;
void sched_event_clear(sched_event *ev);

typedef struct sched sched;
/* Called from the scheduler thread whenever events are ready (e.g. wraps uv_async_send). */
typedef void (*sched_notify_fn)(void *ud);

/* Starts the scheduler thread on e (which it then drives alone until sched_free). m may be NULL.
 * notify is called (from the scheduler thread) when sched_poll has something. */
int sched_new(sched **out, eng *e, const sched_opts *o, metrics *m, sched_notify_fn notify,
              void *ud, char *err, size_t errlen);
/* Stops the thread (ending running jobs), frees every sequence. NULL is a no-op. */
void sched_free(sched *s);

/* Queues job (ownership passes to the scheduler, also on error); *id receives its id (> 0).
 * SCHED_EFULL when the queue is at its bound, SCHED_ECTX when the prompt cannot fit,
 * SCHED_ESTOP while draining, SCHED_ENOMEM without room for the job's START, FINISH, ERROR
 * and DONE events (reserved here, so that they are never lost later). Thread-safe. */
int sched_submit(sched *s, sched_job *job, uint64_t *id, char *err, size_t errlen);
/* Ends a job early (client gone): its sequences are freed before the next step. No events
 * follow for it except possibly ones already queued. Unknown ids are ignored. Thread-safe. */
void sched_cancel(sched *s, uint64_t id);
/* Refuse new jobs from now on (running and queued ones continue). */
void sched_drain(sched *s);
/* Ends every job with an ERROR event carrying message, then DONE. */
void sched_abort_all(sched *s, const char *message);
/* Moves up to cap pending events into out; returns how many. Thread-safe. */
int sched_poll(sched *s, sched_event *out, int cap);
/* Jobs queued + running (for drain decisions). */
int sched_n_jobs(sched *s);
/* The prompt cache's counters as of the last scheduler iteration (all zero when it is off). */
void sched_cache_stats(sched *s, pcache_stats *st);
/* What sched_new did with cache_dir's file, for the log ("" without cache_dir). */
const char *sched_cache_note(const sched *s);
/* Stops the scheduler thread (running jobs end without events: call it after a drain) and
 * writes the prompt cache to cache_dir. 0 (nothing to do counts) or -1; msg says what happened.
 * sched_free is still needed afterwards. */
int sched_cache_save(sched *s, char *msg, size_t msglen);
/* The per-sequence context the scheduler uses. */
int sched_n_ctx(const sched *s);

#endif
