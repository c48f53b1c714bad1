/* cmd_run.c: `lfm2 run`: generate from a prompt on the command line, as text or one JSON line per
 * token. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/eng.h"
#include "engine/invariant.h"
#include "engine/sample.h"
#include "server/cmd/cli.h"

#define RUN_TOP 5

static void run_usage(FILE *f) {
    fprintf(
        f, "usage: lfm2 run -m FILE -p TEXT [options]\n"
           "  -m, --model FILE   LFM2 GGUF file\n"
           "  -p, --prompt TEXT  prompt (BOS per the file's add_bos_token, special tokens parsed)\n"
           "  -n N               tokens to generate (default 128); stops earlier at EOS\n"
           "  --temp T           temperature (default 0.8; 0 = greedy)\n"
           "  --top-k K          (default 40; 0 = off)\n"
           "  --top-p P          (default 0.95; 1 = off)\n"
           "  --min-p P          (default 0.05; 0 = off)\n"
           "  --repeat-penalty R, --presence-penalty P, --frequency-penalty F, --repeat-last-n N\n"
           "  --seed S           RNG seed (default: from the clock)\n"
           "  --ctx N            context size (default min(4096, training context))\n"
           "  -t, --threads N    threads (default: all cores)\n"
           "  --ignore-eos       keep generating past the end-of-sequence token\n"
           "  --json             one JSON object per token: id, text, logprob, top 5\n");
}

static int parse_float(const char *flag, const char *v, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "error: %s '%s': expected a number in [%g, %g]\n", flag,
                v ? v : "(missing)", lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

/* Writes s[0..n) as a JSON string body; bytes that are not valid UTF-8 become U+FFFD. */
static void json_str(FILE *f, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c), i++;
        else if (c == '\n')
            fputs("\\n", f), i++;
        else if (c == '\r')
            fputs("\\r", f), i++;
        else if (c == '\t')
            fputs("\\t", f), i++;
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c), i++;
        else if (c < 0x80)
            fputc((int)c, f), i++;
        else {
            int len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            if (c >= 0xf5) len = 0;
            int ok = len > 0 && i + (size_t)len <= n;
            for (int k = 1; ok && k < len; k++)
                ok = (u[i + k] & 0xc0) == 0x80;
            if (ok && len == 3 &&
                ((c == 0xe0 && u[i + 1] < 0xa0) || (c == 0xed && u[i + 1] >= 0xa0)))
                ok = 0;
            if (ok && len == 4 &&
                ((c == 0xf0 && u[i + 1] < 0x90) || (c == 0xf4 && u[i + 1] >= 0x90)))
                ok = 0;
            if (ok) {
                fwrite(u + i, 1, (size_t)len, f);
                i += (size_t)len;
            } else {
                fputs("\\ufffd", f);
                i++;
            }
        }
    }
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL;
    long n_gen = 128, ctx = 0, threads = 0, seed = -1;
    bool json = false, ignore_eos = false;
    sample_params sp;
    sample_params_default(&sp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        long lv;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
            continue;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = true;
            continue;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            prompt = v;
        else if (!strcmp(a, "-n"))
            rc = cli_parse_long(a, v, 0, 1 << 24, &n_gen);
        else if (!strcmp(a, "--ctx"))
            rc = cli_parse_long(a, v, 1, 1 << 24, &ctx);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            rc = cli_parse_long(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--seed"))
            rc = cli_parse_long(a, v, 0, 0x7fffffffL, &seed);
        else if (!strcmp(a, "--temp"))
            rc = parse_float(a, v, 0, 1e4, &sp.temperature);
        else if (!strcmp(a, "--top-k")) {
            rc = cli_parse_long(a, v, 0, 1 << 24, &lv);
            sp.top_k = (int)lv;
        } else if (!strcmp(a, "--top-p"))
            rc = parse_float(a, v, 0, 1, &sp.top_p);
        else if (!strcmp(a, "--min-p"))
            rc = parse_float(a, v, 0, 1, &sp.min_p);
        else if (!strcmp(a, "--repeat-penalty"))
            rc = parse_float(a, v, 1e-3, 1e4, &sp.repeat_penalty);
        else if (!strcmp(a, "--presence-penalty"))
            rc = parse_float(a, v, -1e4, 1e4, &sp.presence_penalty);
        else if (!strcmp(a, "--frequency-penalty"))
            rc = parse_float(a, v, -1e4, 1e4, &sp.frequency_penalty);
        else if (!strcmp(a, "--repeat-last-n")) {
            rc = cli_parse_long(a, v, 0, 1 << 20, &lv);
            sp.penalty_last_n = (int)lv;
        } else {
            fprintf(stderr, "error: run: unknown option '%s'\n", a);
            run_usage(stderr);
            return 2;
        }
        if (rc < 0) return 2;
        if (!v) {
            fprintf(stderr, "error: option %s needs a value\n", a);
            return 2;
        }
        i++;
    }
    if (!model || !prompt) {
        fprintf(stderr, "error: run needs -m FILE and -p TEXT\n");
        run_usage(stderr);
        return 2;
    }
    sp.seed = seed >= 0 ? (uint64_t)seed : (uint64_t)time(NULL);
    sp.n_top = RUN_TOP;

    char err[512];
    eng_params ep;
    eng_params_default(&ep);
    if (threads) ep.n_threads = (int)threads;
    if (ctx) ep.n_ctx = (int)ctx;
    eng *e = NULL;
    eng_seq *seq = NULL;
    sampler *smp = NULL;
    int32_t *ids = NULL;
    char *buf = NULL; /* one token's text */
    float *logits = NULL;
    int status = 1;
    if (eng_new(&e, model, &ep, err, sizeof err) < 0) {
        cli_file_error(model, err);
        return 1;
    }
    const tok *t = eng_tok(e);
    int n_ctx = eng_default_ctx(e);
    int n = tok_encode(t, prompt, strlen(prompt), tok_add_bos(t), true, NULL, 0);
    if (n < 0) {
        fprintf(stderr, "error: tokenizing the prompt failed\n");
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, "error: prompt is empty (0 tokens) and the model adds no BOS\n");
        goto done;
    }
    if (n > n_ctx) {
        fprintf(stderr, "error: prompt has %d tokens, more than the context size %d (--ctx)\n", n,
                n_ctx);
        goto done;
    }
    ids = malloc((size_t)n * sizeof *ids);
    logits = malloc((size_t)eng_n_vocab(e) * sizeof *logits);
    if (!ids || !logits) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    tok_encode(t, prompt, strlen(prompt), tok_add_bos(t), true, ids, n);
    if (eng_seq_new(e, n_ctx, &seq, err, sizeof err) < 0 ||
        sampler_new(&smp, eng_n_vocab(e), &sp, err, sizeof err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        goto done;
    }
    for (int i = 0; i < n; i++)
        sampler_accept(smp, ids[i]);
    int chunk = eng_max_batch_tokens(e);
    for (int i0 = 0; i0 < n; i0 += chunk) {
        int m = n - i0 < chunk ? n - i0 : chunk;
        eng_batch_item it = {seq, ids + i0, m, i0 + m == n ? ENG_LOGITS_LAST : ENG_LOGITS_NONE,
                             logits};
        eng_batch b = {&it, 1};
        if (eng_step(e, &b, err, sizeof err) < 0) {
            fprintf(stderr, "error: prefill: %s\n", err);
            goto done;
        }
    }
    tok_stream ts;
    tok_stream_init(&ts, t, json);
    /* room for any token's text plus a held incomplete character (tok_stream_push's contract) */
    size_t cap = 4 + tok_max_piece(t);
    buf = malloc(cap);
    if (!buf) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    for (long g = 0; g < n_gen; g++) {
        sample_result r;
        int32_t id = sampler_sample(smp, logits, &r);
        if (id == eng_eos(e) && !ignore_eos) break;
        sampler_accept(smp, id);
        size_t len = tok_stream_push(&ts, id, buf, cap);
        INVARIANT_CMP(len, <=, cap); /* cap covers every piece */
        if (json) {
            printf("{\"id\":%d,\"text\":\"", id);
            json_str(stdout, buf, len);
            printf("\",\"logprob\":%.6g,\"top\":[", (double)r.logprob);
            for (int k = 0; k < r.n_top; k++)
                printf("%s[%d,%.6g]", k ? "," : "", r.top_id[k], (double)r.top_logprob[k]);
            printf("]}\n");
        } else {
            fwrite(buf, 1, len, stdout);
        }
        fflush(stdout);
        if (g + 1 == n_gen) break;
        if (eng_seq_pos(seq) >= n_ctx) {
            fprintf(stderr, "\nnote: context full (%d tokens, --ctx)\n", n_ctx);
            break;
        }
        eng_batch_item it = {seq, &id, 1, ENG_LOGITS_LAST, logits};
        eng_batch b = {&it, 1};
        if (eng_step(e, &b, err, sizeof err) < 0) {
            fprintf(stderr, "error: decode: %s\n", err);
            goto done;
        }
    }
    if (!json) {
        size_t len = tok_stream_flush(&ts, buf, cap);
        fwrite(buf, 1, len < cap ? len : cap, stdout);
        printf("\n");
    }
    status = 0;
done:
    free(buf);
    free(ids);
    free(logits);
    sampler_free(smp);
    eng_seq_free(seq);
    eng_free(e);
    return status;
}
