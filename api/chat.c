/* chat.c: the LFM2 and LFM2.5 chat templates rendered in C into segments. */
#include "api/chat.h"
#include "api/tojson.h"
#include "api/toolcall.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *chat_format_name(enum chat_format f) {
    return f == CHAT_LFM25_DATED ? "lfm2.5-dated" : f == CHAT_LFM25 ? "lfm2.5" : "lfm2";
}

enum chat_format chat_detect(const char *tmpl, bool *known) {
    bool ok = false;
    enum chat_format f = CHAT_LFM2;
    if (tmpl && strstr(tmpl, "<|im_start|>")) {
        if (strstr(tmpl, "<|tool_list_start|>")) {
            ok = true; /* LFM2: tools inside <|tool_list_start|>...<|tool_list_end|> */
        } else if (strstr(tmpl, "render_tool_calls") || strstr(tmpl, "Today's date: ")) {
            ok = true;
            f = CHAT_LFM25_DATED;
        } else if (strstr(tmpl, "keep_past_thinking") || strstr(tmpl, "List of tools: [")) {
            ok = true;
            f = CHAT_LFM25;
        }
    }
    if (known) *known = ok;
    return f;
}

bool chat_think_open(const char *tmpl) {
    /* the Jinja source writes the newline as the two characters \\n */
    return tmpl && (strstr(tmpl, "<|im_start|>assistant\\n<think>") ||
                    strstr(tmpl, "<|im_start|>assistant\n<think>"));
}

typedef struct builder {
    chat_prompt *p;
    bool oom;
} builder;

static void put(builder *b, const char *s, size_t len, bool special) {
    chat_prompt *p = b->p;
    if (b->oom || (!len && !special)) return;
    if (p->arena_len + len + 1 > p->arena_cap) {
        size_t nc = p->arena_cap ? p->arena_cap * 2 : 1024;
        while (nc < p->arena_len + len + 1)
            nc *= 2;
        char *na = realloc(p->arena, nc);
        if (!na) {
            b->oom = true;
            return;
        }
        p->arena = na;
        p->arena_cap = nc;
    }
    bool merge = !special && p->n_segs > 0 && !p->segs[p->n_segs - 1].special;
    if (!merge) {
        if (p->n_segs == p->segs_cap) {
            int nc = p->segs_cap ? p->segs_cap * 2 : 32;
            chat_seg *ns = realloc(p->segs, (size_t)nc * sizeof *ns);
            if (!ns) {
                b->oom = true;
                return;
            }
            p->segs = ns;
            p->segs_cap = nc;
        }
        p->segs[p->n_segs++] = (chat_seg){NULL, 0, special};
    }
    memcpy(p->arena + p->arena_len, s, len);
    p->arena_len += len;
    p->arena[p->arena_len] = 0;
    p->segs[p->n_segs - 1].len += len;
}

static void text(builder *b, const char *s) {
    put(b, s, strlen(s), false);
}
static void special(builder *b, const char *s) {
    put(b, s, strlen(s), true);
}

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' ||
           (c >= 0x1c && c <= 0x1f);
}

/* Markup the model itself writes inside an assistant turn: in assistant content these are
 * control tokens (as the model produced them), everywhere else plain text. Turn structure
 * (<|im_start|>, <|im_end|>, BOS) is never taken from content. */
static const char *const assistant_tags[] = {"<think>", "</think>", "<|tool_call_start|>",
                                             "<|tool_call_end|>"};

static void assistant_text(builder *b, const char *s, size_t len) {
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '<') continue;
        for (size_t t = 0; t < sizeof assistant_tags / sizeof assistant_tags[0]; t++) {
            size_t tl = strlen(assistant_tags[t]);
            if (i + tl <= len && !memcmp(s + i, assistant_tags[t], tl)) {
                put(b, s + start, i - start, false);
                put(b, s + i, tl, true);
                start = i + tl;
                i += tl - 1;
                break;
            }
        }
    }
    put(b, s + start, len - start, false);
}

/* LFM2.5 for earlier assistant turns: content.split("</think>")[-1] | trim */
static void past_assistant(builder *b, const char *s, size_t len) {
    const char *tag = "</think>";
    size_t tl = strlen(tag);
    const char *start = NULL;
    for (size_t i = 0; i + tl <= len; i++)
        if (!memcmp(s + i, tag, tl)) start = s + i + tl;
    if (!start) {
        assistant_text(b, s, len);
        return;
    }
    const char *end = s + len;
    while (start < end && is_ws(*start))
        start++;
    while (end > start && is_ws(end[-1]))
        end--;
    assistant_text(b, start, (size_t)(end - start));
}

/* One argument value as the dated templates' format_arg_value macro writes it: a string in
 * double quotes as it is, a mapping as tojson, anything else as Python's str(). */
static void arg_value(builder *b, const cJSON *v) {
    char *s = NULL;
    if (cJSON_IsString(v)) {
        text(b, "\"");
        text(b, v->valuestring);
        text(b, "\"");
        return;
    }
    s = cJSON_IsObject(v) ? tojson_print(v) : tojson_pystr(v);
    if (!s) {
        b->oom = true;
        return;
    }
    text(b, s);
    free(s);
}

/* <|tool_call_start|>[f(a="x", b=1), g()]<|tool_call_end|> (render_tool_calls). */
static void render_calls(builder *b, const api_message *m) {
    special(b, TOOLCALL_START);
    text(b, "[");
    for (int k = 0; k < m->n_tool_calls; k++) {
        const api_tool_call *c = &m->tool_calls[k];
        if (k) text(b, ", ");
        text(b, c->name ? c->name : "");
        text(b, "(");
        cJSON *args = c->arguments ? cJSON_Parse(c->arguments) : NULL;
        int j = 0;
        for (const cJSON *a = cJSON_IsObject(args) ? args->child : NULL; a; a = a->next, j++) {
            if (j) text(b, ", ");
            text(b, a->string ? a->string : "");
            text(b, "=");
            arg_value(b, a);
        }
        cJSON_Delete(args);
        text(b, ")");
    }
    text(b, "]");
    special(b, TOOLCALL_END);
}

int chat_render(chat_prompt *p, const chat_opts *o, const api_message *msgs, int n, char *err,
                size_t errlen) {
    memset(p, 0, sizeof *p);
    builder b = {p, false};
    bool v25 = o->format == CHAT_LFM25 || o->format == CHAT_LFM25_DATED;
    if (o->bos && o->bos[0]) special(&b, o->bos);

    int first = 0;
    const api_message *sys = NULL;
    if (n > 0 && msgs[0].role == API_ROLE_SYSTEM) {
        sys = &msgs[0];
        first = 1;
    }
    bool has_sys = (sys && sys->len > 0) || o->n_tools > 0;
    if (has_sys) {
        special(&b, "<|im_start|>");
        text(&b, "system\n");
        if (sys) put(&b, sys->content, sys->len, false);
        if (o->n_tools > 0) {
            if (sys && sys->len > 0) text(&b, o->format == CHAT_LFM25_DATED ? "\n\n" : "\n");
            if (o->format == CHAT_LFM25_DATED) {
                char date[32];
                if (o->date) {
                    snprintf(date, sizeof date, "%s", o->date);
                } else {
                    time_t now = time(NULL);
                    struct tm tm;
                    if (!localtime_r(&now, &tm) || !strftime(date, sizeof date, "%Y-%m-%d", &tm))
                        snprintf(date, sizeof date, "1970-01-01");
                }
                text(&b, "Today's date: ");
                text(&b, date);
                text(&b, "\n\n");
            }
            text(&b, "List of tools: ");
            if (!v25) special(&b, "<|tool_list_start|>");
            text(&b, "[");
            for (int i = 0; i < o->n_tools; i++) {
                if (i) text(&b, ", ");
                text(&b, o->tools[i] ? o->tools[i] : "");
            }
            text(&b, "]");
            if (!v25) special(&b, "<|tool_list_end|>");
        }
        special(&b, "<|im_end|>");
        text(&b, "\n");
    }

    int last_assistant = -1;
    for (int i = first; i < n; i++)
        if (msgs[i].role == API_ROLE_ASSISTANT) last_assistant = i;

    for (int i = first; i < n; i++) {
        const api_message *m = &msgs[i];
        special(&b, "<|im_start|>");
        text(&b, api_role_name(m->role));
        text(&b, "\n");
        bool past = m->role == API_ROLE_ASSISTANT && !o->keep_past_thinking && i != last_assistant;
        if (m->role == API_ROLE_ASSISTANT) {
            if (v25 && m->reasoning && !past) {
                special(&b, TOOLCALL_THINK);
                put(&b, m->reasoning, strlen(m->reasoning), false);
                special(&b, TOOLCALL_THINK_END);
            }
            if (m->n_tool_calls > 0) render_calls(&b, m);
        }
        if (v25 && past) {
            past_assistant(&b, m->content, m->len);
        } else if (!v25 && m->role == API_ROLE_TOOL) {
            special(&b, "<|tool_response_start|>");
            put(&b, m->content, m->len, false);
            special(&b, "<|tool_response_end|>");
        } else if (m->role == API_ROLE_ASSISTANT) {
            assistant_text(&b, m->content, m->len);
        } else {
            put(&b, m->content, m->len, false);
        }
        special(&b, "<|im_end|>");
        text(&b, "\n");
    }
    if (o->add_generation_prompt) {
        special(&b, "<|im_start|>");
        text(&b, "assistant\n");
        if (o->think_open) special(&b, TOOLCALL_THINK);
    }
    if (b.oom) {
        snprintf(err, errlen, "out of memory rendering the chat template (%zu bytes so far)",
                 p->arena_len);
        return -1;
    }
    /* segments are laid out back to back in the arena */
    size_t off = 0;
    for (int i = 0; i < p->n_segs; i++) {
        p->segs[i].text = p->arena + off;
        off += p->segs[i].len;
    }
    return 0;
}

void chat_prompt_free(chat_prompt *p) {
    if (!p) return;
    free(p->segs);
    free(p->arena);
    memset(p, 0, sizeof *p);
}

char *chat_prompt_text(const chat_prompt *p) {
    char *s = malloc(p->arena_len + 1);
    if (!s) return NULL;
    if (p->arena_len) memcpy(s, p->arena, p->arena_len);
    s[p->arena_len] = 0;
    return s;
}
