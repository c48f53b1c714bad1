/* sched.c: continuous batching: a thread that admits jobs between eng_step calls, prefills prompts
 * in chunks beside running decodes, samples, matches stop strings and reports events. */
#include "server/sched.h"
#include "api/stop.h"
#include "engine/clock.h"
#include "engine/invariant.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sched_choice {
    eng_seq *seq;
    sampler *smp;
    int32_t last; /* token to feed at the next step */
    int n_gen;    /* tokens generated */
    bool done;
    tok_stream ts;
    stop_matcher sm;     /* holds back text that may begin a stop string */
    sched_tokinfo *ptok; /* logprob records not yet sent */
    int n_ptok, cap_ptok;
    size_t fed, shown; /* bytes of text given to the stop matcher, and released by it */
    double t_last;     /* time of the last token (seconds, monotonic) */
    int32_t *gen;      /* every sampled id, in order (the prompt cache's entry) */
    int cap_gen;
    pcache_snaps gs;   /* conv snapshots taken during generation */
} sched_choice;

typedef struct sjob {
    struct sjob *next;
    uint64_t id;
    sched_job *job;
    sched_choice *ch; /* job->n_choices */
    int n_fed;        /* prompt tokens fed so far (restored from the cache included) */
    int n_cached;     /* prompt tokens restored from the prompt cache */
    pcache_snaps ps;  /* conv snapshots of the prompt (carried from the cache and taken) */
    uint64_t wait_for; /* a job prefilling a prefix of this one's prompt: wait for it, then
                          resume from its state (0: not waiting) */
    int wait_pos;      /* ... until its prefill has passed this position */
    bool prefilled, cancelled, failed;
    int n_live;  /* choices not yet finished */
    int ev_left; /* control-event slots it still holds in the event queue (under mu) */
    double t_submit;
} sjob;

/* Control events a job can send: START, one FINISH per choice, one ERROR, DONE. sched_submit
 * reserves room for all of them in the event queue, so they never allocate and cannot be lost;
 * only TEXT events grow the queue, and a job whose text finds no room ends with an ERROR. */
#define SJOB_CONTROL_EVENTS(n_choices) ((n_choices) + 3)

struct sched {
    eng *e;
    const tok *tk;
    metrics *m;
    sched_opts o;
    int n_vocab, n_ctx, eos;
    sched_notify_fn notify;
    void *ud;
    void *(*alloc)(void *p, size_t n); /* o.realloc_fn or realloc */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    sjob *queue, *queue_tail; /* waiting, FIFO */
    int n_queue;
    uint64_t *cancels; /* ids to cancel */
    int n_cancels, cap_cancels;
    bool quit, draining, abort_all;
    char abort_msg[256];
    sched_event *evs; /* pending events; cap_evs >= n_evs + n_reserved */
    int n_evs, cap_evs;
    int n_reserved; /* slots held for the control events of submitted jobs (sjob.ev_left) */
    uint64_t next_id;
    int n_running_pub; /* copy of the running count for sched_n_jobs */
    /* scheduler thread only */
    sjob *running; /* admitted, in admission order */
    int used_slots;
    int max_tok;           /* most tokens one eng_step takes */
    float *logits;         /* parallel * n_vocab */
    eng_batch_item *items; /* parallel */
    sjob **item_job;       /* parallel: owner of each item */
    int *item_choice;      /* parallel: choice index, -1 for a prefill chunk */
    pcache *pc;            /* NULL: the prompt cache is off */
    size_t snap_floats;    /* floats per conv snapshot */
    eng_snap_req *snapreq; /* parallel: the snapshots each item takes */
    pcache_stats pc_pub;   /* under mu: pc's counters for sched_cache_stats */
    char cache_path[4200]; /* "": no cache file */
    uint64_t model_key;    /* pcache_model_key, for the file */
    char cache_note[4800]; /* what sched_new did with the file */
    bool joined;           /* the thread has been joined (sched_cache_save) */
};

void sched_job_free(sched_job *j) {
    if (!j) return;
    free(j->prompt);
    free(j->bias);
    free(j->bounds);
    for (int i = 0; i < j->n_stop; i++)
        free(j->stop[i]);
    free(j);
}

void sched_event_clear(sched_event *ev) {
    free(ev->text);
    free(ev->toks);
    memset(ev, 0, sizeof *ev);
}

/* Makes room (under mu) for need more events beside the pending and the reserved ones. */
static bool evs_room(sched *s, int need) {
    int want = s->n_evs + s->n_reserved + need;
    if (want <= s->cap_evs) return true;
    int cap = s->cap_evs ? s->cap_evs : 64;
    while (cap < want)
        cap *= 2;
    sched_event *p = s->alloc(s->evs, (size_t)cap * sizeof *p);
    if (!p) return false;
    s->evs = p;
    s->cap_evs = cap;
    return true;
}

/* Appends an event of job j, taking ownership of its text/toks. A control event fills one of
 * j's reserved slots and always succeeds; a TEXT event returns false (and is freed) when the
 * queue cannot grow. A failed job sends only its DONE: later events are freed unsent. Caller
 * holds no lock. */
static bool push_event(sched *s, sjob *j, sched_event *ev) {
    if (j->failed && ev->kind != SCHED_EV_DONE) {
        sched_event_clear(ev);
        return true;
    }
    bool ok = true;
    pthread_mutex_lock(&s->mu);
    if (ev->kind == SCHED_EV_TEXT) {
        ok = evs_room(s, 1);
    } else {
        INVARIANT_CMP(j->ev_left, >, 0);
        INVARIANT_CMP(s->n_evs, <, s->cap_evs);
        j->ev_left--;
        s->n_reserved--;
    }
    if (ok) s->evs[s->n_evs++] = *ev;
    pthread_mutex_unlock(&s->mu);
    if (!ok) sched_event_clear(ev);
    return ok;
}

static void emit_simple(sched *s, sjob *j, int kind, int index) {
    sched_event ev = {0};
    ev.job = j->id;
    ev.kind = kind;
    ev.index = index;
    push_event(s, j, &ev);
}

/* Ends job j with an ERROR carrying msg (only its first error is sent); reap sends its DONE. */
static void job_fail(sched *s, sjob *j, const char *msg) {
    if (j->failed) return;
    sched_event ev = {0};
    ev.job = j->id;
    ev.kind = SCHED_EV_ERROR;
    snprintf(ev.message, sizeof ev.message, "%s", msg);
    push_event(s, j, &ev);
    j->failed = true;
}

static void emit_done(sched *s, sjob *j) {
    sched_event ev = {0};
    ev.job = j->id;
    ev.kind = SCHED_EV_DONE;
    ev.n_prompt = j->job->n_prompt;
    ev.n_cached = j->n_cached;
    for (int i = 0; i < j->job->n_choices; i++)
        ev.n_completion += j->ch ? j->ch[i].n_gen : 0;
    push_event(s, j, &ev);
}

/* Sends text (copied) for choice ci with the logprob records of the tokens whose text has begun
 * to show (all of them when all is set): a token whose text the stop matcher still holds waits,
 * and one that starts inside a matched stop string is never sent, as its text is not. Out of
 * memory the job fails rather than send a choice with a gap in it. */
static void emit_text(sched *s, sjob *j, int ci, const char *text, size_t n, bool all) {
    sched_choice *c = &j->ch[ci];
    int k = c->n_ptok; /* records go in text order */
    if (!all)
        while (k > 0 && c->ptok[k - 1].off >= c->shown)
            k--;
    if (n == 0 && k == 0) return;
    sched_event ev = {0};
    ev.job = j->id;
    ev.kind = SCHED_EV_TEXT;
    ev.index = ci;
    if (n) {
        ev.text = s->alloc(NULL, n + 1);
        if (!ev.text) {
            job_fail(s, j, "out of memory");
            return;
        }
        memcpy(ev.text, text, n);
        ev.text[n] = 0;
        ev.len = n;
    }
    if (k == c->n_ptok && k) { /* all of them: hand the array over */
        ev.toks = c->ptok;
        ev.n_toks = k;
        c->ptok = NULL;
        c->n_ptok = c->cap_ptok = 0;
    } else if (k) {
        ev.toks = s->alloc(NULL, (size_t)k * sizeof *ev.toks);
        if (!ev.toks) {
            sched_event_clear(&ev);
            job_fail(s, j, "out of memory");
            return;
        }
        memcpy(ev.toks, c->ptok, (size_t)k * sizeof *ev.toks);
        ev.n_toks = k;
        memmove(c->ptok, c->ptok + k, (size_t)(c->n_ptok - k) * sizeof *c->ptok);
        c->n_ptok -= k;
    }
    if (!push_event(s, j, &ev)) job_fail(s, j, "out of memory");
}

static void choice_release(sched_choice *c) {
    eng_seq_free(c->seq);
    c->seq = NULL;
    sampler_free(c->smp);
    c->smp = NULL;
}

/* Text for choice ci that the stop matcher released (m bytes at out; none when m <= 0). */
static void show_text(sched *s, sjob *j, int ci, const char *out, long m) {
    if (m <= 0) return;
    j->ch[ci].shown += (size_t)m;
    emit_text(s, j, ci, out, (size_t)m, false);
}

/* Gives n bytes of choice ci's text to the stop matcher and sends what it releases. */
static void feed_text(sched *s, sjob *j, int ci, const char *text, size_t n) {
    sched_choice *c = &j->ch[ci];
    const char *out = NULL;
    long m = n ? stop_feed(&c->sm, text, n, &out) : 0;
    if (m < 0) { /* the matcher could not take the text: the job ends rather than skip it */
        job_fail(s, j, "out of memory");
        return;
    }
    c->fed += n;
    show_text(s, j, ci, out, m);
}

/* Ends choice ci. flush: the text still held (incomplete UTF-8, a possible stop prefix) is
 * sent first; after a stop string matched there is nothing to flush. */
static void choice_finish(sched *s, sjob *j, int ci, int finish, bool flush) {
    sched_choice *c = &j->ch[ci];
    if (c->done) return;
    if (flush && !c->sm.done) {
        char tail[16];
        const char *out = NULL;
        feed_text(s, j, ci, tail, tok_stream_flush(&c->ts, tail, sizeof tail));
        if (c->sm.done) {
            finish = SCHED_FINISH_STOP;
        } else {
            /* out is read only after stop_flush set it: arguments have no evaluation order */
            long m = stop_flush(&c->sm, &out);
            show_text(s, j, ci, out, m);
        }
    }
    /* the last records: all of them, unless a stop string matched (those are in it) */
    emit_text(s, j, ci, NULL, 0, !c->sm.done);
    sched_event ev = {0};
    ev.job = j->id;
    ev.kind = SCHED_EV_FINISH;
    ev.index = ci;
    ev.finish = finish;
    push_event(s, j, &ev);
    c->done = true;
    j->n_live--;
    if (s->pc && !j->job->no_cache && !j->failed && c->seq)
        pcache_insert(s->pc, j->job->prompt, j->job->n_prompt, c->gen, c->seq, &j->ps, &c->gs);
    choice_release(c);
}

static void sjob_free(sched *s, sjob *j) {
    if (!j) return;
    if (j->ch) {
        for (int i = 0; i < j->job->n_choices; i++) {
            choice_release(&j->ch[i]);
            stop_free(&j->ch[i].sm);
            free(j->ch[i].ptok);
            free(j->ch[i].gen);
            pcache_snaps_free(&j->ch[i].gs);
        }
        free(j->ch);
    }
    if (j->ev_left) { /* give back the control-event slots it did not use */
        pthread_mutex_lock(&s->mu);
        s->n_reserved -= j->ev_left;
        pthread_mutex_unlock(&s->mu);
    }
    pcache_snaps_free(&j->ps);
    sched_job_free(j->job);
    free(j);
}

/* Takes one sampled token for choice ci: text, stop strings, EOS, length. */
static void choice_take(sched *s, sjob *j, int ci, const sample_result *r) {
    sched_choice *c = &j->ch[ci];
    sched_job *jb = j->job;
    double t = clock_now_s();
    if (s->m) {
        if (c->n_gen == 0)
            metrics_observe_ttft(s->m, t - j->t_submit);
        else
            metrics_observe_token(s->m, t - c->t_last);
    }
    c->t_last = t;
    if (s->pc && !jb->no_cache && c->n_gen == c->cap_gen) {
        int cap = c->cap_gen ? c->cap_gen * 2 : 64;
        int32_t *p = realloc(c->gen, (size_t)cap * sizeof *p);
        if (!p) {
            job_fail(s, j, "out of memory");
            return;
        }
        c->gen = p;
        c->cap_gen = cap;
    }
    if (c->gen) c->gen[c->n_gen] = r->id;
    c->n_gen++;
    sampler_accept(c->smp, r->id);
    if (jb->want_logprobs && r->id != s->eos) { /* EOS is not part of the text: no record */
        if (c->n_ptok == c->cap_ptok) {
            int cap = c->cap_ptok ? c->cap_ptok * 2 : 8;
            sched_tokinfo *p = s->alloc(c->ptok, (size_t)cap * sizeof *p);
            if (!p) {
                job_fail(s, j, "out of memory");
                return;
            }
            c->ptok = p;
            c->cap_ptok = cap;
        }
        sched_tokinfo *ti = &c->ptok[c->n_ptok++];
        ti->off = c->fed;
        ti->id = r->id;
        ti->logprob = r->logprob;
        ti->n_top = r->n_top;
        memcpy(ti->top_id, r->top_id, sizeof ti->top_id);
        memcpy(ti->top_logprob, r->top_logprob, sizeof ti->top_logprob);
    }
    if (r->id == s->eos) {
        choice_finish(s, j, ci, SCHED_FINISH_STOP, true);
        return;
    }
    char piece[512];
    size_t plen = 0;
    tok_piece(s->tk, r->id, &plen);
    char *buf = plen + 8 <= sizeof piece ? piece : s->alloc(NULL, plen + 8);
    if (!buf) {
        job_fail(s, j, "out of memory");
        return;
    }
    c->ts.render_special = false; /* control tokens are text only when the job shows them */
    for (int k = 0; k < jb->n_show_special; k++)
        if (jb->show_special[k] == r->id) c->ts.render_special = true;
    size_t n = tok_stream_push(&c->ts, r->id, buf, buf == piece ? sizeof piece : plen + 8);
    feed_text(s, j, ci, buf, n);
    if (buf != piece) free(buf);
    if (j->failed) return;
    if (c->sm.done) {
        choice_finish(s, j, ci, SCHED_FINISH_STOP, false);
        return;
    }
    bool full = eng_seq_pos(c->seq) + 1 > eng_seq_n_ctx(c->seq);
    if ((jb->max_tokens > 0 && c->n_gen >= jb->max_tokens) || full) {
        choice_finish(s, j, ci, SCHED_FINISH_LENGTH, true);
        return;
    }
    c->last = r->id;
}

/* A cancelled job (a client that stopped reading, e.g. a chat app's stop button) still leaves
 * its state in the prompt cache: the next turn usually carries the partial answer it saw. */
static void keep_cancelled(sched *s, sjob *j) {
    if (!s->pc || j->job->no_cache || !j->ch || j->wait_for) return;
    for (int i = 0; i < j->job->n_choices; i++) {
        sched_choice *c = &j->ch[i];
        if (c->seq && eng_seq_pos(c->seq) > 0)
            pcache_insert(s->pc, j->job->prompt, j->job->n_prompt, c->gen, c->seq, &j->ps, &c->gs);
    }
}

/* Removes finished, failed and cancelled jobs from the running list (DONE unless cancelled). */
static void reap(sched *s) {
    sjob **pp = &s->running;
    while (*pp) {
        sjob *j = *pp;
        if (j->cancelled || j->failed || (j->prefilled && j->n_live == 0)) {
            *pp = j->next;
            if (!j->cancelled) emit_done(s, j);
            if (j->cancelled && !j->failed) keep_cancelled(s, j);
            if (s->m) {
                long gen = 0;
                for (int i = 0; j->ch && i < j->job->n_choices; i++)
                    gen += j->ch[i].n_gen;
                metrics_add_tokens(s->m, j->n_fed, gen);
            }
            s->used_slots -= j->job->n_choices;
            sjob_free(s, j);
        } else {
            pp = &j->next;
        }
    }
}

static bool share_wait(sched *s, sjob *j);
static void resume(sched *s, sjob *j);

/* Sets up an admitted job: its first sequence (the others are forked after prefill). */
static void admit(sched *s, sjob *j) {
    char err[256];
    j->ch = calloc((size_t)j->job->n_choices, sizeof *j->ch);
    if (!j->ch) {
        job_fail(s, j, "out of memory");
        return;
    }
    j->n_live = j->job->n_choices;
    if (eng_seq_new(s->e, s->n_ctx, &j->ch[0].seq, err, sizeof err) < 0) {
        job_fail(s, j, err);
        return;
    }
    if (s->pc && j->job->no_cache)
        pcache_count_disabled(s->pc);
    else if (s->pc && !share_wait(s, j))
        resume(s, j);
    emit_simple(s, j, SCHED_EV_START, 0);
}

/* Starts job j from the prompt cache's deepest usable state for its prompt. At least one prompt
 * token is left to prefill, so the first logits come from a step as they would without it. */
static void resume(sched *s, sjob *j) {
    int reason;
    j->n_cached = pcache_resume(s->pc, j->job->prompt, j->job->n_prompt, j->job->n_prompt - 1,
                                j->ch[0].seq, &j->ps, &reason);
    j->n_fed = j->n_cached;
}

/* The deepest position at or below m where job a's prefill takes a snapshot (prefill_snaps). */
static int planned_snap(const sched *s, const sched_job *a, int m) {
    int d = m / s->o.snap_every * s->o.snap_every;
    for (int i = 0; i < a->n_bounds && a->bounds[i] <= m; i++)
        if (a->bounds[i] > d) d = a->bounds[i];
    if (a->n_prompt - 1 <= m && a->n_prompt - 1 > d) d = a->n_prompt - 1;
    if (a->n_prompt <= m) d = a->n_prompt;
    return d;
}

#define SHARE_MIN 16 /* fewer tokens gained than this: not worth waiting for another job */

/* Requests that arrive together and share a prefix (a system prompt) share its prefill: j waits
 * for a running job that is prefilling that prefix until it has passed its deepest snapshot
 * inside it (share_release then publishes that job's state to the cache and resumes j from it).
 * False when no running job would give j SHARE_MIN tokens more than the cache has now. */
static bool share_wait(sched *s, sjob *j) {
    const sched_job *jb = j->job;
    const int limit = jb->n_prompt - 1;
    int best_d = pcache_peek(s->pc, jb->prompt, jb->n_prompt, limit) + SHARE_MIN;
    const sjob *best = NULL;
    for (const sjob *a = s->running; a; a = a->next) {
        if (a == j || a->prefilled || a->failed || a->cancelled || a->job->no_cache || !a->ch ||
            !a->ch[0].seq || a->wait_for)
            continue;
        const int top = a->job->n_prompt < limit ? a->job->n_prompt : limit;
        int m = 0;
        while (m < top && a->job->prompt[m] == jb->prompt[m])
            m++;
        int d = planned_snap(s, a->job, m);
        if (d > best_d) best = a, best_d = d;
    }
    if (!best) return false;
    j->wait_for = best->id;
    j->wait_pos = best_d;
    return true;
}

/* Waiting jobs whose job has passed the position they wait for (or is gone) resume: from the
 * state that job publishes to the cache now, or from what the cache has. */
static void share_release(sched *s) {
    for (sjob *j = s->running; j; j = j->next) {
        if (!j->wait_for || !j->ch || !j->ch[0].seq) continue;
        sjob *a = s->running;
        while (a && a->id != j->wait_for)
            a = a->next;
        bool alive = a && !a->failed && !a->cancelled && a->ch && a->ch[0].seq;
        if (alive && !a->prefilled && a->n_fed < j->wait_pos && !j->failed && !j->cancelled)
            continue;
        if (alive)
            pcache_insert(s->pc, a->job->prompt, a->job->n_prompt, a->ch[0].gen, a->ch[0].seq,
                          &a->ps, &a->ch[0].gs);
        j->wait_for = 0;
        if (!j->failed && !j->cancelled) resume(s, j);
    }
}

/* After the prompt's last chunk: fork the choices and create their samplers. */
static void start_choices(sched *s, sjob *j) {
    char err[256];
    sched_job *jb = j->job;
    for (int i = 0; i < jb->n_choices; i++) {
        sched_choice *c = &j->ch[i];
        if (i > 0 && eng_seq_fork(j->ch[0].seq, -1, 0, &c->seq, err, sizeof err) < 0) {
            job_fail(s, j, err);
            return;
        }
        sample_params sp = jb->samp;
        sp.seed = jb->samp.seed + (uint64_t)i;
        if (sampler_new(&c->smp, s->n_vocab, &sp, err, sizeof err) < 0) {
            job_fail(s, j, err);
            return;
        }
        int from = sp.penalty_last_n > 0 && jb->n_prompt > sp.penalty_last_n
                       ? jb->n_prompt - sp.penalty_last_n
                       : 0;
        for (int k = from; k < jb->n_prompt; k++)
            sampler_accept(c->smp, jb->prompt[k]);
        tok_stream_init(&c->ts, s->tk, false);
        if (stop_init(&c->sm, (const char *const *)jb->stop, jb->n_stop) < 0) {
            job_fail(s, j, "out of memory");
            return;
        }
    }
    j->prefilled = true;
}

/* Samples choice ci; log-probabilities (a log-softmax over the vocabulary) only when asked. */
static void draw(sjob *j, int ci, const float *logits, sample_result *r) {
    if (j->job->want_logprobs) {
        sampler_sample(j->ch[ci].smp, logits, r);
        return;
    }
    r->id = sampler_sample(j->ch[ci].smp, logits, NULL);
    r->logprob = 0;
    r->n_top = 0;
}

/* Publishes the running-job count for sched_n_jobs, and the gauges (scheduler thread). */
static void publish_count(sched *s) {
    int n = 0, active = 0;
    uint64_t bytes = 0;
    for (sjob *j = s->running; j; j = j->next) {
        n++;
        for (int i = 0; j->ch && i < j->job->n_choices; i++)
            if (j->ch[i].seq) {
                active++;
                bytes += eng_seq_bytes(j->ch[i].seq);
            }
    }
    pcache_stats st = {0};
    if (s->pc) pcache_stats_get(s->pc, &st);
    pthread_mutex_lock(&s->mu);
    s->n_running_pub = n;
    int n_queue = s->n_queue;
    s->pc_pub = st;
    pthread_mutex_unlock(&s->mu);
    if (s->m) {
        if (s->pc) {
            metrics_cache mc = {st.lookups[PCACHE_HIT],      st.lookups[PCACHE_MISS_NO_ENTRY],
                                st.lookups[PCACHE_MISS_EVICTED], st.lookups[PCACHE_MISS_DISABLED],
                                st.rewrites,                 st.tokens_reused,
                                st.evictions,                st.bytes,
                                st.entries};
            metrics_set_cache(s->m, &mc);
        }
        metrics_set_queue_depth(s->m, n_queue);
        metrics_set_active(s->m, active);
        metrics_set_kv_bytes(s->m, bytes);
    }
}

/* Sleeps until there is a job, a cancellation or an abort; false when told to quit. */
static bool wait_for_work(sched *s) {
    pthread_mutex_lock(&s->mu);
    while (!s->quit && !s->running && !s->queue && !s->n_cancels && !s->abort_all)
        pthread_cond_wait(&s->cv, &s->mu);
    bool quit = s->quit;
    pthread_mutex_unlock(&s->mu);
    return !quit;
}

/* Cancellations: running jobs are marked (reap frees them), queued ones leave the queue. */
static void take_cancels(sched *s) {
    sjob *dropped = NULL;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_cancels; i++) {
        uint64_t id = s->cancels[i];
        for (sjob *j = s->running; j; j = j->next)
            if (j->id == id) j->cancelled = true;
        for (sjob **pp = &s->queue, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
            if ((*pp)->id == id) {
                sjob *j = *pp;
                *pp = j->next;
                if (s->queue_tail == j) s->queue_tail = prev;
                s->n_queue--;
                j->next = dropped;
                dropped = j;
                break;
            }
    }
    s->n_cancels = 0;
    pthread_mutex_unlock(&s->mu);
    while (dropped) {
        sjob *j = dropped;
        dropped = j->next;
        sjob_free(s, j);
    }
}

/* The abort: running jobs get ERROR (reap sends DONE), queued ones ERROR + DONE. */
static void take_abort(sched *s) {
    char msg[256];
    pthread_mutex_lock(&s->mu);
    bool aborting = s->abort_all;
    sjob *queued = NULL;
    if (aborting) {
        s->abort_all = false;
        snprintf(msg, sizeof msg, "%s", s->abort_msg);
        queued = s->queue;
        s->queue = s->queue_tail = NULL;
        s->n_queue = 0;
    }
    pthread_mutex_unlock(&s->mu); /* events take the lock */
    if (!aborting) return;
    for (sjob *j = s->running; j; j = j->next)
        if (!j->cancelled) job_fail(s, j, msg);
    while (queued) {
        sjob *j = queued;
        queued = j->next;
        job_fail(s, j, msg);
        emit_done(s, j);
        sjob_free(s, j);
    }
}

/* Admission, FIFO: queued jobs start while their choices fit; the head waits for room. */
static void admit_jobs(sched *s) {
    sjob *admitted = NULL, **atail = &admitted;
    pthread_mutex_lock(&s->mu);
    while (s->queue && s->used_slots + s->queue->job->n_choices <= s->o.parallel) {
        sjob *j = s->queue;
        s->queue = j->next;
        if (!s->queue) s->queue_tail = NULL;
        s->n_queue--;
        j->next = NULL;
        *atail = j;
        atail = &j->next;
        s->used_slots += j->job->n_choices;
        s->n_running_pub++;
    }
    pthread_mutex_unlock(&s->mu);
    sjob **rt = &s->running;
    while (*rt)
        rt = &(*rt)->next;
    *rt = admitted;
    for (sjob *j = admitted; j; j = j->next)
        admit(s, j);
}

/* The snapshots a prefill chunk of job j takes (positions in (n_fed, n_fed + chunk]): where a
 * message of the prompt ends, at the prompt's end and every snap_every tokens, written after
 * the ones j holds (take_results counts them in once the step has run). None without the cache,
 * or without memory for them (reuse is then shallower, answers the same). */
static eng_snap_req prefill_snaps(sched *s, sjob *j, int chunk) {
    eng_snap_req r = {0};
    const sched_job *jb = j->job;
    if (!s->pc || jb->no_cache) return r;
    const int lo = j->n_fed, hi = j->n_fed + chunk, every = s->o.snap_every;
    int most = jb->n_bounds + 2 + chunk / every + 1;
    if (pcache_snaps_reserve(&j->ps, s->snap_floats, most) < 0) return r;
    int *at = j->ps.pos + j->ps.n, n = 0, b = 0;
    for (int p = lo + 1; p <= hi; p++) { /* ascending, each position once */
        while (b < jb->n_bounds && jb->bounds[b] < p)
            b++;
        /* n_prompt - 1: the same prompt again (a regenerated answer) reuses all but one token */
        bool want = p >= jb->n_prompt - 1 || p % every == 0 ||
                    (b < jb->n_bounds && jb->bounds[b] == p);
        if (want && n < most) at[n++] = p;
    }
    r.at = at;
    r.n = n;
    r.dst = j->ps.data + (size_t)j->ps.n * s->snap_floats;
    return r;
}

/* Building the batch: a token per running choice, then prompt chunks; returns the item count. */
static int build_batch(sched *s) {
    int n_items = 0, budget = s->max_tok;
    for (sjob *j = s->running; j; j = j->next) {
        if (!j->prefilled) continue;
        for (int i = 0; i < j->job->n_choices && budget > 0; i++) {
            sched_choice *c = &j->ch[i];
            if (c->done) continue;
            eng_batch_item *it = &s->items[n_items];
            s->snapreq[n_items] = (eng_snap_req){0};
            it->seq = c->seq;
            it->tokens = &c->last;
            it->n_tokens = 1;
            it->logits_mode = ENG_LOGITS_LAST;
            it->logits = s->logits + (size_t)n_items * s->n_vocab;
            s->item_job[n_items] = j;
            s->item_choice[n_items] = i;
            n_items++;
            budget--;
        }
    }
    for (sjob *j = s->running; j && budget > 0; j = j->next) {
        if (j->prefilled || j->wait_for) continue;
        int left = j->job->n_prompt - j->n_fed;
        int chunk = left < s->o.prefill_chunk ? left : s->o.prefill_chunk;
        if (chunk > budget) chunk = budget;
        eng_batch_item *it = &s->items[n_items];
        s->snapreq[n_items] = prefill_snaps(s, j, chunk);
        it->seq = j->ch[0].seq;
        it->tokens = j->job->prompt + j->n_fed;
        it->n_tokens = chunk;
        it->logits_mode = chunk == left ? ENG_LOGITS_LAST : ENG_LOGITS_NONE;
        it->logits = s->logits + (size_t)n_items * s->n_vocab;
        s->item_job[n_items] = j;
        s->item_choice[n_items] = -1;
        n_items++;
        budget -= chunk;
    }
    return n_items;
}

/* The step: one eng_step over the batch. On failure every job in it ends with the error. */
static bool step(sched *s, int n_items) {
    char err[256];
    eng_batch b = {s->items, n_items};
    if (eng_step_snap(s->e, &b, s->pc ? s->snapreq : NULL, err, sizeof err) == 0) return true;
    for (int k = 0; k < n_items; k++)
        job_fail(s, s->item_job[k], err);
    return false;
}

/* A generating choice's conv snapshot every snap_every positions (after its step). */
static void gen_snap(sched *s, sjob *j, int ci) {
    sched_choice *c = &j->ch[ci];
    if (!s->pc || j->job->no_cache || eng_seq_pos(c->seq) % s->o.snap_every) return;
    if (pcache_snaps_reserve(&c->gs, s->snap_floats, 1) < 0) return;
    eng_seq_snap(c->seq, c->gs.data + (size_t)c->gs.n * s->snap_floats);
    c->gs.pos[c->gs.n++] = eng_seq_pos(c->seq);
}

/* Taking results: each decode samples a token; a prompt's last chunk starts its choices. */
static void take_results(sched *s, int n_items) {
    for (int k = 0; k < n_items; k++) {
        sjob *j = s->item_job[k];
        if (j->cancelled || j->failed) continue;
        const float *lg = s->items[k].logits;
        if (s->item_choice[k] >= 0) {
            sample_result r;
            gen_snap(s, j, s->item_choice[k]);
            draw(j, s->item_choice[k], lg, &r);
            choice_take(s, j, s->item_choice[k], &r);
            continue;
        }
        if (s->pc) j->ps.n += s->snapreq[k].n;
        j->n_fed += s->items[k].n_tokens;
        if (j->n_fed < j->job->n_prompt) continue;
        start_choices(s, j);
        for (int i = 0; i < j->job->n_choices && !j->failed; i++) {
            sample_result r;
            draw(j, i, lg, &r);
            choice_take(s, j, i, &r);
        }
    }
}

/* The scheduler thread: one turn of the loop per engine step. */
static void *sched_main(void *arg) {
    sched *s = arg;
    while (wait_for_work(s)) {
        take_cancels(s);
        take_abort(s);
        admit_jobs(s);
        reap(s);
        if (s->pc) share_release(s);
        int n_items = build_batch(s);
        publish_count(s);
        if (n_items > 0) {
            if (step(s, n_items)) take_results(s, n_items);
            reap(s);
            publish_count(s);
        }
        if (s->notify) s->notify(s->ud);
    }
    while (s->running) { /* quitting: end everything */
        sjob *j = s->running;
        s->running = j->next;
        sjob_free(s, j);
    }
    return NULL;
}

/* Frees s and everything it holds once its thread has ended (or never started). */
static void release(sched *s) {
    while (s->queue) {
        sjob *j = s->queue;
        s->queue = j->next;
        sjob_free(s, j);
    }
    for (int i = 0; i < s->n_evs; i++)
        sched_event_clear(&s->evs[i]);
    free(s->evs);
    free(s->cancels);
    free(s->logits);
    free(s->items);
    free(s->item_job);
    free(s->item_choice);
    free(s->snapreq);
    pcache_free(s->pc);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int sched_new(sched **out, eng *e, const sched_opts *o, metrics *m, sched_notify_fn notify,
              void *ud, char *err, size_t errlen) {
    sched *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "sched: out of memory");
        return SCHED_ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->e = e;
    s->tk = eng_tok(e);
    s->m = m;
    s->notify = notify;
    s->ud = ud;
    s->o = o ? *o : (sched_opts){0};
    if (s->o.parallel <= 0) s->o.parallel = 4;
    if (s->o.queue_max <= 0) s->o.queue_max = 64;
    if (s->o.prefill_chunk <= 0) s->o.prefill_chunk = 256;
    s->n_ctx = s->o.n_ctx > 0 ? s->o.n_ctx : eng_default_ctx(e);
    s->n_vocab = eng_n_vocab(e);
    s->eos = eng_eos(e);
    s->max_tok = eng_max_batch_tokens(e);
    s->alloc = s->o.realloc_fn ? s->o.realloc_fn : realloc;
    s->next_id = 1;
    s->logits = malloc((size_t)s->o.parallel * (size_t)s->n_vocab * sizeof(float));
    s->items = calloc((size_t)s->o.parallel, sizeof *s->items);
    s->item_job = calloc((size_t)s->o.parallel, sizeof *s->item_job);
    s->item_choice = calloc((size_t)s->o.parallel, sizeof *s->item_choice);
    s->snapreq = calloc((size_t)s->o.parallel, sizeof *s->snapreq);
    if (s->o.snap_every <= 0) s->o.snap_every = 256;
    s->snap_floats = eng_snap_floats(e);
    if (s->o.cache_bytes &&
        pcache_new(&s->pc, e, s->o.cache_bytes, tok_find(s->tk, "<think>", 7)) < 0) {
        snprintf(err, errlen, "sched: out of memory for the prompt cache");
        goto fail;
    }
    if (s->pc && s->o.cache_dir && *s->o.cache_dir) {
        char lerr[512];
        snprintf(s->cache_path, sizeof s->cache_path, "%.4096s/lfm2-prompt-cache.bin",
                 s->o.cache_dir);
        s->model_key = pcache_model_key(e);
        int n = access(s->cache_path, F_OK) != 0
                    ? -2
                    : pcache_load(s->pc, s->cache_path, s->model_key, lerr, sizeof lerr);
        pcache_stats st;
        pcache_stats_get(s->pc, &st);
        s->pc_pub = st;
        if (n == -2)
            snprintf(s->cache_note, sizeof s->cache_note, "prompt cache: no %s yet", s->cache_path);
        else if (n < 0)
            snprintf(s->cache_note, sizeof s->cache_note, "prompt cache: skipped: %s", lerr);
        else
            snprintf(s->cache_note, sizeof s->cache_note,
                     "prompt cache: read %d entries (%llu MiB) from %s", n,
                     (unsigned long long)(st.bytes >> 20), s->cache_path);
    }
    if (!s->logits || !s->items || !s->item_job || !s->item_choice || !s->snapreq) {
        snprintf(err, errlen, "sched: out of memory for %d sequences", s->o.parallel);
        goto fail;
    }
    int rc = pthread_create(&s->thread, NULL, sched_main, s);
    if (rc) {
        snprintf(err, errlen, "sched: cannot start the scheduler thread: %s", strerror(rc));
        goto fail;
    }
    *out = s;
    return 0;
fail:
    release(s);
    return SCHED_ENOMEM;
}

static void stop_thread(sched *s) {
    if (s->joined) return;
    pthread_mutex_lock(&s->mu);
    s->quit = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->joined = true;
}

void sched_free(sched *s) {
    if (!s) return;
    stop_thread(s);
    release(s);
}

const char *sched_cache_note(const sched *s) { return s->cache_note; }

int sched_cache_save(sched *s, char *msg, size_t msglen) {
    stop_thread(s);
    snprintf(msg, msglen, "prompt cache: no --cache-dir, nothing written");
    if (!s->pc || !s->cache_path[0]) return 0;
    char err[512];
    mkdir(s->o.cache_dir, 0700); /* one level; an existing folder is fine */
    if (pcache_save(s->pc, s->cache_path, s->model_key, err, sizeof err) < 0) {
        snprintf(msg, msglen, "prompt cache: not written: %s", err);
        return -1;
    }
    pcache_stats st;
    pcache_stats_get(s->pc, &st);
    snprintf(msg, msglen, "prompt cache: wrote %llu entries (%llu MiB) to %s",
             (unsigned long long)st.entries, (unsigned long long)(st.bytes >> 20), s->cache_path);
    return 0;
}

int sched_submit(sched *s, sched_job *job, uint64_t *id, char *err, size_t errlen) {
    if (!job || job->n_prompt < 1 || !job->prompt || job->n_choices < 1) {
        snprintf(err, errlen, "sched: a job needs at least one prompt token and one choice");
        sched_job_free(job);
        return SCHED_EINVAL;
    }
    if (job->n_choices > s->o.parallel) {
        snprintf(err, errlen, "n is %d, more than this server runs at once (parallel = %d)",
                 job->n_choices, s->o.parallel);
        sched_job_free(job);
        return SCHED_EINVAL;
    }
    if (job->n_prompt + 1 > s->n_ctx) {
        snprintf(err, errlen,
                 "This model's maximum context length is %d tokens. However, your prompt has %d "
                 "tokens (and at least 1 more is needed for the completion).",
                 s->n_ctx, job->n_prompt);
        sched_job_free(job);
        return SCHED_ECTX;
    }
    sjob *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "sched: out of memory");
        sched_job_free(job);
        return SCHED_ENOMEM;
    }
    j->job = job;
    j->t_submit = clock_now_s();
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->draining || s->quit) {
        snprintf(err, errlen, "the server is shutting down");
        rc = SCHED_ESTOP;
    } else if (s->n_queue >= s->o.queue_max) {
        snprintf(err, errlen, "the request queue is full (%d waiting); retry later", s->n_queue);
        rc = SCHED_EFULL;
    } else if (!evs_room(s, SJOB_CONTROL_EVENTS(job->n_choices))) {
        snprintf(err, errlen, "sched: out of memory for the job's events");
        rc = SCHED_ENOMEM;
    } else {
        j->ev_left = SJOB_CONTROL_EVENTS(job->n_choices);
        s->n_reserved += j->ev_left;
        j->id = s->next_id++;
        if (s->queue_tail)
            s->queue_tail->next = j;
        else
            s->queue = j;
        s->queue_tail = j;
        s->n_queue++;
        *id = j->id;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) sjob_free(s, j);
    return rc;
}

void sched_cancel(sched *s, uint64_t id) {
    pthread_mutex_lock(&s->mu);
    if (s->n_cancels == s->cap_cancels) {
        int cap = s->cap_cancels ? s->cap_cancels * 2 : 16;
        uint64_t *p = realloc(s->cancels, (size_t)cap * sizeof *p);
        if (p) {
            s->cancels = p;
            s->cap_cancels = cap;
        }
    }
    if (s->n_cancels < s->cap_cancels) s->cancels[s->n_cancels++] = id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_drain(sched *s) {
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    pthread_mutex_unlock(&s->mu);
}

void sched_abort_all(sched *s, const char *message) {
    pthread_mutex_lock(&s->mu);
    s->abort_all = true;
    snprintf(s->abort_msg, sizeof s->abort_msg, "%s", message);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int sched_poll(sched *s, sched_event *out, int cap) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_evs < cap ? s->n_evs : cap;
    if (n > 0) {
        memcpy(out, s->evs, (size_t)n * sizeof *out);
        memmove(s->evs, s->evs + n, (size_t)(s->n_evs - n) * sizeof *out);
        s->n_evs -= n;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

int sched_n_jobs(sched *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_queue + s->n_running_pub;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sched_cache_stats(sched *s, pcache_stats *st) {
    pthread_mutex_lock(&s->mu);
    *st = s->pc_pub;
    pthread_mutex_unlock(&s->mu);
}

int sched_n_ctx(const sched *s) {
    return s->n_ctx;
}
