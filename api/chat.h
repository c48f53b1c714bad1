/* chat.h: LFM2 / LFM2.5 chat formats rendered as segments (control tokens vs text). */
#ifndef LFM2_API_CHAT_H
#define LFM2_API_CHAT_H
#include <stddef.h>
#include <stdbool.h>
#include "api/request.h"

/* The formats we render in C (not a Jinja engine). Both are ChatML-like:
 *   <|startoftext|><|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n
 *   <|im_start|>assistant\n
 * LFM2: tools line "List of tools: <|tool_list_start|>[...]<|tool_list_end|>", tool results
 *       wrapped in <|tool_response_start|>...<|tool_response_end|>.
 * LFM2.5: tools line "List of tools: [...]", tool results unwrapped, and every assistant turn
 *       but the last drops its reasoning: only the text after the last "</think>" is kept,
 *       trimmed of surrounding whitespace. */
enum chat_format { CHAT_LFM2 = 0, CHAT_LFM25 = 1 };
const char *chat_format_name(enum chat_format f); /* "lfm2", "lfm2.5" */

/* Recognizes the format from tokenizer.chat_template text (NULL allowed). *known is set false
 * when the text is neither (or absent): the result is then CHAT_LFM2 and the caller should log
 * a note that the template was not recognized. */
enum chat_format chat_detect(const char *tmpl, bool *known);

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
    const char *const *tools;   /* JSON text of each tool (already serialized); NULL/0: none */
    int n_tools;
    bool keep_past_thinking; /* LFM2.5: keep <think> text of earlier assistant turns */
} chat_opts;

/* Renders msgs into p (initialized here; free with chat_prompt_free even on error). The BOS is
 * part of the output, so the caller tokenizes without adding another. 0, or -1 when out of
 * memory (message in err). */
int chat_render(chat_prompt *p, const chat_opts *o, const api_message *msgs, int n, char *err,
                size_t errlen);
void chat_prompt_free(chat_prompt *p); /* zeroes p */

/* The whole prompt as one malloc'd NUL-terminated string (for logs and tests); NULL on OOM. */
char *chat_prompt_text(const chat_prompt *p);

#endif
