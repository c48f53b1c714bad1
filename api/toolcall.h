/* toolcall.h: LFM2's generated text split into content, reasoning and OpenAI tool calls. */
#ifndef LFM2_API_TOOLCALL_H
#define LFM2_API_TOOLCALL_H
#include <stdbool.h>
#include <stddef.h>

/* The markup the model writes, as its control tokens' text (the server renders these tokens). */
#define TOOLCALL_START "<|tool_call_start|>"
#define TOOLCALL_END "<|tool_call_end|>"
#define TOOLCALL_THINK "<think>"
#define TOOLCALL_THINK_END "</think>"

typedef struct toolcall {
    char *name;      /* the function name as written (dotted names kept: "Calendar.create") */
    char *arguments; /* compact JSON text of an object ({} when the call had no arguments) */
} toolcall;

/* Parses the text between <|tool_call_start|> and <|tool_call_end|>: a Python-style list of
 * calls `[f(a="x", b=1), ns.g(c=[1, {'k': True}])]` (keyword arguments only; strings in single
 * or double quotes, triple quotes too, with Python's escapes; True/False/None and
 * true/false/null; numbers; nested lists, tuples and dicts; trailing commas) or the JSON form
 * `[{"name": "f", "arguments": {...}}]` ("arguments" may also be "parameters", or a string
 * holding the object), or one call of either form without the brackets. Whitespace around is
 * allowed. On success returns the number of calls (>= 1) and *out (malloc'd, toolcall_free_all)
 * holds them; -1 when the text is not such a list (nothing allocated), -2 when out of memory.
 * Nesting deeper than 64 levels counts as malformed. */
int toolcall_parse(const char *s, size_t len, toolcall **out);
void toolcall_free_all(toolcall *c, int n); /* frees the names, arguments and the array */

typedef struct toolcall_opts {
    bool reasoning;       /* take <think>...</think> at the start out of the content */
    bool start_reasoning; /* the prompt ended inside <think>: the text starts as reasoning */
    bool tools;           /* recognize <|tool_call_start|> blocks as calls */
    int max_calls;        /* most calls returned (parallel_tool_calls false: 1); <= 0: no limit */
    const char *const *names; /* declared function names: a call of another name leaves its
                               * block as content; NULL = any name */
    int n_names;
} toolcall_opts;

/* What one push (or the finish) decided. Pointers are valid until the next call on the stream. */
typedef struct toolcall_delta {
    const char *content; /* new content bytes (content_len), never inside a call block */
    size_t content_len;
    const char *reasoning; /* new reasoning bytes */
    size_t reasoning_len;
    const toolcall *calls; /* calls completed by this push; the first has index first_call */
    int n_calls;
    int first_call;
} toolcall_delta;

/* Incremental splitter: generated text in, content / reasoning / calls out, the same for any
 * split of the text into pushes (the non-streamed answer is one push and the finish). Text that
 * may still turn into markup (a prefix of <|tool_call_start|>, whitespace that would be trimmed,
 * a call block until its end token) is held back until decided.
 * - Reasoning (opts.reasoning): text from a leading <think> (after whitespace) or from the start
 *   (opts.start_reasoning) to </think> (or the end), trimmed of surrounding whitespace;
 *   whitespace after </think> is dropped.
 * - Calls (opts.tools): a block <|tool_call_start|>LIST<|tool_call_end|> (or LIST to the end of
 *   the text when the end token never comes) whose LIST parses (toolcall_parse) and names only
 *   declared functions becomes calls, else it stays as content, tags included. Whitespace around
 *   a parsed block is dropped, and so is an echo of LIST right after it, except that content on
 *   both sides of parsed blocks stays apart by the whitespace before the first of them (or, when
 *   there is none, the whitespace after it). Calls beyond opts.max_calls are dropped. */
typedef struct toolcall_stream toolcall_stream;
toolcall_stream *toolcall_stream_new(const toolcall_opts *o); /* NULL when out of memory */
void toolcall_stream_free(toolcall_stream *s);                /* NULL is a no-op */
/* Feeds len bytes; 0 and *d filled, or -1 when out of memory. */
int toolcall_stream_push(toolcall_stream *s, const char *text, size_t len, toolcall_delta *d);
/* The end of the text: releases or decides everything held. 0, or -1 when out of memory. */
int toolcall_stream_finish(toolcall_stream *s, toolcall_delta *d);
/* Calls decided so far (all of them after the finish), and the array of them (valid until the
 * next push, finish or free). */
int toolcall_stream_n_calls(const toolcall_stream *s);
const toolcall *toolcall_stream_calls(const toolcall_stream *s);

#endif
