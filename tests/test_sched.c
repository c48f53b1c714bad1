/* test_sched.c: the scheduler on a real tiny model: batching does not change greedy output, forks
 * (n > 1) match solo runs with the same seeds, stop strings, lengths, limits, cancel, abort, out of
 * memory. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "engine/eng.h"
#include "synth/mkmodel.h"
#include "server/sched.h"
#include "tests/check.h"

#define MAXJ 16
#define MAXC 4

typedef struct result {
    char text[MAXC][4096];
    size_t len[MAXC];
    int finish[MAXC];
    bool done, error;
    int n_prompt, n_completion, n_cached;
    char message[256];
} result;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int pokes;

static void notify(void *ud) {
    (void)ud;
    pthread_mutex_lock(&mu);
    pokes++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static eng *E;
static int EOS;

static sched_job *job_new(const char *prompt, int n, int max_tokens, float temp, uint64_t seed,
                          bool ban_eos) {
    sched_job *j = calloc(1, sizeof *j);
    const tok *tk = eng_tok(E);
    int cap = 4096;
    j->prompt = malloc(cap * sizeof(int32_t));
    j->n_prompt = tok_encode(tk, prompt, strlen(prompt), tok_add_bos(tk), false, j->prompt, cap);
    j->n_choices = n;
    j->max_tokens = max_tokens;
    sample_params_default(&j->samp);
    j->samp.temperature = temp;
    j->samp.seed = seed;
    if (ban_eos) {
        j->bias = malloc(sizeof *j->bias);
        j->bias[0].id = EOS;
        j->bias[0].bias = -INFINITY;
        j->samp.bias = j->bias;
        j->samp.n_bias = 1;
    }
    return j;
}

/* Collects events for ids[0..n) into res until every job is DONE (or timeout). */
static void collect(sched *s, const uint64_t *ids, result *res, int n) {
    int done = 0;
    for (int spins = 0; done < n && spins < 20000; spins++) {
        sched_event ev[32];
        int k = sched_poll(s, ev, 32);
        for (int i = 0; i < k; i++) {
            for (int r = 0; r < n; r++) {
                if (ev[i].job != ids[r]) continue;
                result *o = &res[r];
                switch (ev[i].kind) {
                case SCHED_EV_TEXT:
                    if (o->len[ev[i].index] + ev[i].len < sizeof o->text[0]) {
                        memcpy(o->text[ev[i].index] + o->len[ev[i].index], ev[i].text, ev[i].len);
                        o->len[ev[i].index] += ev[i].len;
                    }
                    break;
                case SCHED_EV_FINISH:
                    o->finish[ev[i].index] = ev[i].finish;
                    break;
                case SCHED_EV_ERROR:
                    o->error = true;
                    snprintf(o->message, sizeof o->message, "%s", ev[i].message);
                    break;
                case SCHED_EV_DONE:
                    o->done = true;
                    o->n_prompt = ev[i].n_prompt;
                    o->n_completion = ev[i].n_completion;
                    o->n_cached = ev[i].n_cached;
                    done++;
                    break;
                }
            }
            sched_event_clear(&ev[i]);
        }
        if (!k) {
            pthread_mutex_lock(&mu);
            if (!pokes) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 1000000;
                if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
                pthread_cond_timedwait(&cv, &mu, &ts);
            }
            pokes = 0;
            pthread_mutex_unlock(&mu);
        }
    }
}

/* Drains events until job id has started (joined the batch); other events are dropped. */
static bool wait_start(sched *s, uint64_t id) {
    for (int spins = 0; spins < 10000; spins++) {
        sched_event ev[32];
        int k = sched_poll(s, ev, 32);
        bool seen = false;
        for (int i = 0; i < k; i++) {
            if (ev[i].job == id && ev[i].kind == SCHED_EV_START) seen = true;
            sched_event_clear(&ev[i]);
        }
        if (seen) return true;
        if (!k) usleep(1000);
    }
    return false;
}

/* The scheduler's allocator in the out-of-memory cases: requests above alloc_limit bytes fail.
 * Set only while no scheduler runs. */
static size_t alloc_limit = SIZE_MAX;
static void *limited_realloc(void *p, size_t n) {
    return n > alloc_limit ? NULL : realloc(p, n);
}

static sched *mk_sched(int parallel, int queue_max, int chunk, int n_ctx) {
    sched_opts o = {
        .parallel = parallel, .queue_max = queue_max, .prefill_chunk = chunk, .n_ctx = n_ctx};
    sched *s = NULL;
    char err[256];
    int rc = sched_new(&s, E, &o, NULL, notify, NULL, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "sched_new: %s\n", err);
    return s;
}

static const char *prompts[8] = {
    "Once upon a time", "The capital of France is", "def fib(n):", "Hello, my name is",
    "In 1492 Columbus", "Rice is cooked by",        "Q: 2+2?\nA:", "Roses are red,"};

int main(void) {
    char err[512], path[1024];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/test_sched_%d.gguf", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    mkmodel_opts mo = {0};
    CHECK_EQ_INT(mkmodel_preset("tiny", &mo.shape, err, sizeof err), 0);
    mo.seed = 1;
    mo.ftype = MK_F32;
    mo.preset = "tiny";
    if (mkmodel_write(&mo, path, err, sizeof err) < 0) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    eng_params ep;
    eng_params_default(&ep);
    ep.max_seqs = 16;
    ep.n_threads = 2;
    if (eng_new(&E, path, &ep, err, sizeof err) < 0) {
        fprintf(stderr, "eng_new: %s\n", err);
        return 1;
    }
    EOS = eng_eos(E);
    static result solo[8], together[8], r[MAXJ];
    uint64_t ids[MAXJ];

    /* 1. greedy output alone == beside 7 others */
    sched *s = mk_sched(8, 16, 256, 512);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ_INT(
            sched_submit(s, job_new(prompts[i], 1, 24, 0, 1, false), &ids[0], err, sizeof err), 0);
        collect(s, ids, &solo[i], 1);
        CHECK(solo[i].done && !solo[i].error);
        CHECK(solo[i].n_completion >= 1 && solo[i].n_completion <= 24);
    }
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(
            sched_submit(s, job_new(prompts[i], 1, 24, 0, 1, false), &ids[i], err, sizeof err), 0);
    collect(s, ids, together, 8);
    for (int i = 0; i < 8; i++) {
        CHECK(together[i].done);
        CHECK_EQ_INT(together[i].len[0], solo[i].len[0]);
        CHECK(together[i].len[0] == solo[i].len[0] &&
              !memcmp(together[i].text[0], solo[i].text[0], solo[i].len[0]));
        CHECK_EQ_INT(together[i].finish[0], solo[i].finish[0]);
        CHECK_EQ_INT(together[i].n_completion, solo[i].n_completion);
        CHECK_EQ_INT(together[i].n_prompt, solo[i].n_prompt);
    }

    /* 2. n = 3 greedy: every fork continues exactly like the solo run */
    memset(r, 0, sizeof r);
    CHECK_EQ_INT(sched_submit(s, job_new(prompts[0], 3, 24, 0, 1, false), &ids[0], err, sizeof err),
                 0);
    collect(s, ids, r, 1);
    for (int c = 0; c < 3; c++) {
        CHECK_EQ_INT(r[0].len[c], solo[0].len[0]);
        CHECK(!memcmp(r[0].text[c], solo[0].text[0], solo[0].len[0]));
    }
    CHECK_EQ_INT(r[0].n_completion, 3 * solo[0].n_completion);

    /* 3. n = 2 sampled with seed S: choice i equals a solo run with seed S + i */
    memset(r, 0, sizeof r);
    CHECK_EQ_INT(
        sched_submit(s, job_new(prompts[3], 2, 20, 1.0f, 77, true), &ids[0], err, sizeof err), 0);
    CHECK_EQ_INT(
        sched_submit(s, job_new(prompts[3], 1, 20, 1.0f, 77, true), &ids[1], err, sizeof err), 0);
    CHECK_EQ_INT(
        sched_submit(s, job_new(prompts[3], 1, 20, 1.0f, 78, true), &ids[2], err, sizeof err), 0);
    collect(s, ids, r, 3);
    CHECK_EQ_INT(r[0].len[0], r[1].len[0]);
    CHECK(!memcmp(r[0].text[0], r[1].text[0], r[1].len[0]));
    CHECK_EQ_INT(r[0].len[1], r[2].len[0]);
    CHECK(!memcmp(r[0].text[1], r[2].text[0], r[2].len[0]));
    CHECK_EQ_INT(r[0].finish[0], SCHED_FINISH_LENGTH);
    CHECK_EQ_INT(r[0].n_completion, 40);

    /* 4. stop string from the middle of the greedy text: output is the text before it */
    memset(r, 0, sizeof r);
    CHECK_EQ_INT(sched_submit(s, job_new(prompts[1], 1, 40, 0, 1, true), &ids[0], err, sizeof err),
                 0);
    collect(s, ids, r, 1);
    CHECK_EQ_INT(r[0].finish[0], SCHED_FINISH_LENGTH);
    CHECK_EQ_INT(r[0].n_completion, 40);
    char full[4096];
    size_t flen = r[0].len[0];
    memcpy(full, r[0].text[0], flen);
    full[flen] = 0;
    size_t at = flen / 2;
    while (at < flen && ((unsigned char)full[at] & 0xC0) == 0x80)
        at++;
    size_t sl = 0;
    while (at + sl < flen && sl < 3) {
        sl++;
        while (at + sl < flen && ((unsigned char)full[at + sl] & 0xC0) == 0x80)
            sl++;
    }
    CHECK(flen >= 2); /* 40 tokens of text: the stop string must come from inside it */
    CHECK(sl > 0);
    if (sl) {
        char stop[32];
        memcpy(stop, full + at, sl);
        stop[sl] = 0;
        size_t first = (size_t)(strstr(full, stop) - full);
        sched_job *j = job_new(prompts[1], 1, 40, 0, 1, true);
        j->stop[0] = strdup(stop);
        j->stop[1] = strdup("\x01never");
        j->n_stop = 2;
        memset(r, 0, sizeof r);
        CHECK_EQ_INT(sched_submit(s, j, &ids[0], err, sizeof err), 0);
        collect(s, ids, r, 1);
        CHECK_EQ_INT(r[0].finish[0], SCHED_FINISH_STOP);
        CHECK(r[0].n_completion < 40); /* the match ended generation early */
        CHECK_EQ_INT(r[0].len[0], first);
        CHECK(!memcmp(r[0].text[0], full, first));
    }

    /* 5. a prompt that cannot fit the context; n above parallel; empty prompt */
    sched_job *big = job_new(prompts[0], 1, 4, 0, 1, false);
    big->prompt = realloc(big->prompt, 600 * sizeof(int32_t));
    for (int i = 0; i < 600; i++)
        big->prompt[i] = 300 + i % 200;
    big->n_prompt = 600;
    CHECK_EQ_INT(sched_submit(s, big, &ids[0], err, sizeof err), SCHED_ECTX);
    CHECK(strstr(err, "512") != NULL);
    CHECK_EQ_INT(sched_submit(s, job_new(prompts[0], 9, 4, 0, 1, false), &ids[0], err, sizeof err),
                 SCHED_EINVAL);
    sched_job *empty = job_new("", 1, 4, 0, 1, false);
    empty->n_prompt = 0;
    CHECK_EQ_INT(sched_submit(s, empty, &ids[0], err, sizeof err), SCHED_EINVAL);

    /* 6. a long prompt prefilled in 32-token chunks beside a running stream: both complete */
    memset(r, 0, sizeof r);
    sched_job *lj = job_new(prompts[0], 1, 4, 0, 1, true);
    lj->prompt = realloc(lj->prompt, 400 * sizeof(int32_t));
    for (int i = 0; i < 400; i++)
        lj->prompt[i] = 300 + (i * 7) % 500;
    lj->n_prompt = 400;
    CHECK_EQ_INT(sched_submit(s, job_new(prompts[2], 1, 60, 0, 1, true), &ids[0], err, sizeof err),
                 0);
    CHECK_EQ_INT(sched_submit(s, lj, &ids[1], err, sizeof err), 0);
    collect(s, ids, r, 2);
    CHECK(r[0].done && r[1].done && !r[0].error && !r[1].error);
    CHECK_EQ_INT(r[0].n_completion, 60);
    CHECK_EQ_INT(r[1].n_prompt, 400);
    CHECK_EQ_INT(r[1].n_completion, 4);
    sched_free(s);

    /* 7. bounded queue, cancel, abort */
    s = mk_sched(1, 1, 64, 4096);
    memset(r, 0, sizeof r);
    CHECK_EQ_INT(
        sched_submit(s, job_new(prompts[0], 1, 3000, 1, 1, true), &ids[0], err, sizeof err), 0);
    CHECK(wait_start(s, ids[0])); /* admitted: the queue is empty again */
    CHECK_EQ_INT(
        sched_submit(s, job_new(prompts[1], 1, 3000, 1, 1, true), &ids[1], err, sizeof err), 0);
    CHECK_EQ_INT(
        sched_submit(s, job_new(prompts[2], 1, 3000, 1, 1, true), &ids[2], err, sizeof err),
        SCHED_EFULL);
    CHECK_EQ_INT(sched_n_jobs(s), 2);
    sched_cancel(s, ids[1]); /* queued */
    for (int i = 0; i < 500 && sched_n_jobs(s) != 1; i++)
        usleep(1000);
    CHECK_EQ_INT(sched_n_jobs(s), 1);
    sched_abort_all(s, "going away");
    collect(s, ids, r, 1);
    CHECK(r[0].done && r[0].error);
    CHECK_STR(r[0].message, "going away");
    CHECK(r[0].n_completion < 3000);
    for (int i = 0; i < 500 && sched_n_jobs(s) != 0; i++)
        usleep(1000);
    CHECK_EQ_INT(sched_n_jobs(s), 0);
    CHECK_EQ_INT(sched_submit(s, job_new(prompts[2], 1, 2, 0, 1, false), &ids[0], err, sizeof err),
                 0);
    memset(r, 0, sizeof r);
    collect(s, ids, r, 1);
    CHECK(r[0].done && !r[0].error);
    /* running job cancelled: it disappears and the next one runs */
    CHECK_EQ_INT(
        sched_submit(s, job_new(prompts[0], 1, 3000, 1, 1, true), &ids[0], err, sizeof err), 0);
    usleep(20000);
    sched_cancel(s, ids[0]);
    for (int i = 0; i < 500 && sched_n_jobs(s) != 0; i++)
        usleep(1000);
    CHECK_EQ_INT(sched_n_jobs(s), 0);
    sched_drain(s);
    CHECK_EQ_INT(sched_submit(s, job_new(prompts[2], 1, 2, 0, 1, false), &ids[0], err, sizeof err),
                 SCHED_ESTOP);
    sched_free(s);
    sched_free(NULL);

    /* 8. out of memory. No room for a job's events: sched_submit refuses it. */
    sched_opts lo = {.parallel = 4, .queue_max = 8, .n_ctx = 512, .realloc_fn = limited_realloc};
    alloc_limit = 0;
    CHECK_EQ_INT(sched_new(&s, E, &lo, NULL, notify, NULL, err, sizeof err), 0);
    CHECK_EQ_INT(sched_submit(s, job_new(prompts[0], 1, 4, 0, 1, false), &ids[0], err, sizeof err),
                 SCHED_ENOMEM);
    sched_free(s);
    /* The event queue cannot grow past 64 events and nothing polls until three jobs (four
     * choices) have ended. A job whose text finds no room ends with ERROR and then only its DONE;
     * every job gets its DONE, and the short one finishes normally with its FINISH. */
    alloc_limit = 64 * sizeof(sched_event);
    CHECK_EQ_INT(sched_new(&s, E, &lo, NULL, notify, NULL, err, sizeof err), 0);
    const int nch[3] = {1, 2, 1}, max[3] = {2, 40, 40};
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sched_submit(s, job_new(prompts[i], nch[i], max[i], 0, 1, true), &ids[i], err,
                                  sizeof err),
                     0);
    for (int i = 0; i < 10000 && sched_n_jobs(s) != 0; i++)
        usleep(1000);
    CHECK_EQ_INT(sched_n_jobs(s), 0);
    memset(r, 0, sizeof r);
    collect(s, ids, r, 3);
    int n_oom = 0;
    for (int i = 0; i < 3; i++) {
        CHECK(r[i].done);
        if (r[i].error) {
            CHECK_STR(r[i].message, "out of memory");
            n_oom++;
            continue;
        }
        for (int c = 0; c < nch[i]; c++)
            CHECK_EQ_INT(r[i].finish[c], SCHED_FINISH_LENGTH);
    }
    CHECK(!r[0].error && r[0].len[0] > 0);
    CHECK(n_oom > 0); /* the queue did run out of room */
    sched_free(s);
    alloc_limit = SIZE_MAX;

    /* the prompt cache: two jobs submitted together that share a long prefix (a system prompt)
     * share its prefill: the second waits for the first to pass the prefix's end and resumes
     * from its state; a third, later, resumes from the first's finished entry */
    {
        sched_opts co = {.parallel = 4, .prefill_chunk = 64, .n_ctx = 2048,
                         .cache_bytes = 64 << 20, .snap_every = 64};
        CHECK_EQ_INT(sched_new(&s, E, &co, NULL, notify, NULL, err, sizeof err), 0);
        static char text[3][4096 + 64];
        int n = 0;
        for (int w = 0; w < 120; w++)
            n += snprintf(text[0] + n, 4096 - n, "%s ", prompts[w % 8]);
        snprintf(text[1], sizeof text[1], "%.4096sand then a different ending", text[0]);
        snprintf(text[2], sizeof text[2], "%.4096sthe third ending", text[0]);
        memset(r, 0, 4 * sizeof r[0]);
        sched_job *ja = job_new(text[0], 1, 4, 0, 1, true);
        sched_job *jb = job_new(text[1], 1, 4, 0, 1, true);
        const int shared = ja->n_prompt; /* a prefix of jb's prompt up to a token or two */
        jb->bounds = malloc(sizeof(int32_t));
        jb->bounds[0] = shared - 2; /* a message boundary there in both */
        jb->n_bounds = 1;
        ja->bounds = malloc(sizeof(int32_t));
        ja->bounds[0] = shared - 2;
        ja->n_bounds = 1;
        CHECK(shared > 500);
        CHECK_EQ_INT(sched_submit(s, ja, &ids[0], err, sizeof err), 0);
        CHECK_EQ_INT(sched_submit(s, jb, &ids[1], err, sizeof err), 0);
        collect(s, ids, r, 2);
        CHECK(r[0].done && r[1].done && !r[0].error && !r[1].error);
        if (r[0].error || r[1].error) fprintf(stderr, "%s | %s\n", r[0].message, r[1].message);
        CHECK_EQ_INT(r[0].n_cached, 0);
        CHECK(r[1].n_cached >= shared - 2);
        CHECK(r[1].n_cached < r[1].n_prompt);
        sched_job *jc = job_new(text[2], 1, 4, 0, 1, true);
        CHECK_EQ_INT(sched_submit(s, jc, &ids[2], err, sizeof err), 0);
        collect(s, ids + 2, r + 2, 1);
        CHECK(r[2].n_cached >= shared - 2);
        pcache_stats st;
        sched_cache_stats(s, &st);
        CHECK(st.lookups[PCACHE_HIT] >= 2 && st.entries >= 1 && st.bytes > 0);
        /* no_cache: nothing read, nothing stored */
        sched_job *jd = job_new(text[2], 1, 4, 0, 1, true);
        jd->no_cache = true;
        CHECK_EQ_INT(sched_submit(s, jd, &ids[3], err, sizeof err), 0);
        collect(s, ids + 3, r + 3, 1);
        CHECK_EQ_INT(r[3].n_cached, 0);
        CHECK(r[3].done && !r[3].error);
        sched_free(s);
    }
    eng_free(E);
    unlink(path);
    return check_done("test_sched");
}
