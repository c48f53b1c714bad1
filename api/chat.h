/* chat.h: LFM2 / LFM2.5 chat formats rendered as segments (control tokens vs text). */
#ifndef LFM2_API_CHAT_H
#define LFM2_API_CHAT_H
#include <stddef.h>
#include <stdbool.h>
#include "api/request.h"

/* The formats we render in C (not a Jinja engine), one per family of published LFM2 templates.
 * All are ChatML-like:
 *   <|startoftext|><|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n
 *   <|im_start|>assistant\n
 * LFM2: tools line "List of tools: <|tool_list_start|>[...]<|tool_list_end|>" after the system
 *       text and "\n", tool results wrapped in <|tool_response_start|>...<|tool_response_end|>.
 * LFM2.5: tools line "List of tools: [...]" after "\n", tool results unwrapped, and every
 *       assistant turn but the last drops its reasoning: only the text after the last "</think>"
 *       is kept, trimmed of surrounding whitespace (unless keep_past_thinking).
 * LFM2.5 dated (the templates with a render_tool_calls macro): as LFM2.5, but the system text is
 *       followed by "\n\n" and "Today's date: YYYY-MM-DD\n\nList of tools: [...]", and an
 *       assistant message's reasoning (the template's message.thinking, our reasoning_content) is
 *       rendered as <think>...</think> in the last assistant turn (every turn with
 *       keep_past_thinking).
 * Each tool is its JSON as tojson writes it (", " and ": ", keys in the client's order), joined
 * by ", " (tojson of the whole list writes the same text).
 * Assistant tool_calls are rendered, in every family, before the content as the model writes
 * them and as the dated templates' render_tool_calls macro does:
 *   <|tool_call_start|>[name(arg="string", n=1, flag=True, list=['a', 1], obj={"k": "v"})]
 *   <|tool_call_end|>
 * (strings in double quotes as they are, objects as tojson, everything else as Python's str()).
 * The LFM2 and plain LFM2.5 templates do not render tool_calls at all; we render them so the model
 * sees its own calls in the history. Reasoning in history: the dated family as its template
 * does; plain LFM2.5 as <think>...</think> before the content where the template would keep it
 * (the last assistant turn, or all with keep_past_thinking); LFM2 (no reasoning) drops it. Null
 * content is rendered as "" (the published templates write "null"). */
enum chat_format { CHAT_LFM2 = 0, CHAT_LFM25 = 1, CHAT_LFM25_DATED = 2 };
const char *chat_format_name(enum chat_format f); /* "lfm2", "lfm2.5", "lfm2.5-dated" */

/* Recognizes the format from tokenizer.chat_template text (NULL allowed). *known is set false
 * when the text is neither (or absent): the result is then CHAT_LFM2 and the caller should log
 * a note that the template was not recognized. */
enum chat_format chat_detect(const char *tmpl, bool *known);
/* True when the template's generation prompt opens a reasoning block ("<|im_start|>assistant\n"
 * followed by "<think>"): generated text then starts inside <think>. */
bool chat_think_open(const char *tmpl);

/* One piece of the rendered prompt. special: text is exactly one control token's text
 * ("<|im_start|>"): look it up with tok_find (if the vocab lacks it, tokenize it as plain text).
 * Otherwise it is plain text (template markup such as "user\n" merged with message content) to
 * tokenize WITHOUT special-token parsing, so special-token text typed by a user never becomes a
 * control token. The one exception is assistant content: the markup the model itself emits there
 * (<think>, </think>, <|tool_call_start|>, <|tool_call_end|>) comes out as special segments so
 * earlier turns are fed back as the model wrote them; turn markers (<|im_start|>, <|im_end|>,
 * BOS) never come from any content. Adjacent plain texts are merged,
 * so tokenizing segment by segment gives the same ids as llama.cpp's whole-prompt tokenization
 * (which splits at special tokens first) whenever the content holds no special-token text. */
typedef struct chat_seg {
    const char *text; /* points into the prompt's arena; NOT NUL-terminated */
    size_t len;
    bool special;
} chat_seg;

typedef struct chat_prompt {
    chat_seg *segs;
    int n_segs;
    char *arena; /* all segment text, owned */
    size_t arena_len;
    size_t arena_cap;
    int segs_cap;
} chat_prompt;

typedef struct chat_opts {
    enum chat_format format;
    const char *bos;            /* BOS token text rendered first ("<|startoftext|>"); NULL: none */
    bool add_generation_prompt; /* end with "<|im_start|>assistant\n" (true for serving) */
    const char *const *tools;   /* JSON text of each tool (api_tool.json); NULL/0: none */
    int n_tools;
    bool keep_past_thinking; /* LFM2.5: keep <think> text of earlier assistant turns */
    const char *date;        /* LFM2.5 dated: "YYYY-MM-DD" for "Today's date"; NULL: today (local
                              * time, as the template's strftime_now) */
    bool think_open;         /* end the generation prompt with <think> (chat_think_open) */
} chat_opts;

/* Renders msgs into p (initialized here; free with chat_prompt_free even on error). The BOS is
 * part of the output, so the caller tokenizes without adding another. Tool-call arguments are
 * JSON object text (api_tool_call.arguments; anything else renders as {}). 0, or -1 when out of
 * memory (message in err). */
int chat_render(chat_prompt *p, const chat_opts *o, const api_message *msgs, int n, char *err,
                size_t errlen);
void chat_prompt_free(chat_prompt *p); /* zeroes p */

/* The whole prompt as one malloc'd NUL-terminated string (for logs and tests); NULL on OOM. */
char *chat_prompt_text(const chat_prompt *p);

#endif
