/* gram.h: constrained decoding: a byte-level pushdown matcher for JSON values (and LFM2 tool-call
 * lists) described by a graph of value nodes, and token masks over a tokenizer's vocabulary.
 *
 * The graph is built through the gram_* builder calls below (api/schema.c compiles a JSON
 * schema into it; this module never sees JSON text as a document). A built gram is immutable and
 * shared by every choice of a request; each choice runs its own gram_matcher.
 *
 * The text a matcher accepts (the whitespace and number policies, documented in docs/api.md):
 * - whitespace: up to GRAM_MAX_WS bytes of [ \t\n\r] before the value, after `{ [ , :` and
 *   after a value inside an object or array; none inside literals or numbers, none after the
 *   complete top-level value; in the Python call syntax one space after a comma between calls
 *   or keyword arguments and none elsewhere (values inside arguments follow the JSON rule);
 * - numbers: -?(0|[1-9][0-9]*)(\.[0-9]+)? without exponent, at most GRAM_MAX_INT_DIGITS integer
 *   and GRAM_MAX_FRAC_DIGITS fraction digits (integers: no fraction); bounds are exact;
 * - strings: UTF-8 checked strictly, escapes \" \\ \/ \b \f \n \r \t \uXXXX (no surrogate
 *   escapes; no \/ in Python mode), lengths counted in code points as JSON Schema does;
 * - objects: declared properties in their declared order (optional ones may be skipped), extra
 *   keys (when allowed) anywhere, without backslashes and never equal to a declared key;
 * - enum/const literals exactly as given (the compiler writes them compactly);
 * - nesting at most GRAM_MAX_DEPTH: a value is only started when it can be finished within it.
 * Every state the matcher reaches can be completed, so a model can always finish. */
#ifndef LFM2_GRAM_H
#define LFM2_GRAM_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "engine/tok.h"

#define GRAM_MAX_WS 20               /* whitespace bytes in one place */
#define GRAM_MAX_INT_DIGITS 15       /* integer-part digits of a number */
#define GRAM_MAX_FRAC_DIGITS 9       /* fraction digits of a non-integer number */
#define GRAM_MAX_DEPTH 48            /* nesting of arrays/objects/strings... (frames) */
#define GRAM_MAX_THREADS 16          /* alternative parses kept at once (anyOf ambiguity) */
#define GRAM_MAX_NODES 20000         /* nodes in one graph */
#define GRAM_MAX_LIT_BYTES (1 << 22) /* bytes of all enum/const literals and keys of one graph */

enum gram_kind {
    GRAM_ALT = 1, /* one of several nodes (anyOf, type lists) */
    GRAM_LIT,     /* one of a set of exact byte strings (enum, const, true/false/null) */
    GRAM_STR,     /* a JSON string with a code-point length range */
    GRAM_INT,     /* an integer in [lo, hi] */
    GRAM_NUM,     /* a number in [lo, hi] */
    GRAM_OBJ,     /* an object: ordered properties, required ones, extra keys */
    GRAM_ARR,     /* an array: prefix items, then items, min/max count */
    GRAM_CALLS,   /* <|tool_call_start|>[f(k=v, ...), ...]<|tool_call_end|> (Python style) */
};

enum { GRAM_EINVAL = -1, GRAM_ENOMEM = -2 };

typedef struct gram gram;

/* py: literals true/false/null are spelled True/False/None (tool-call arguments) and the \/
 * escape is refused. Returns NULL out of memory. */
gram *gram_new(bool py);
/* Drops a reference (the last one frees). NULL is a no-op. */
void gram_free(gram *g);
/* Another reference to a finished (immutable) gram, for a second owner; returns g. */
gram *gram_ref(gram *g);

/* Builder: every call returns a node id (>= 0) or a negative code with err naming the limit.
 * Node ids may be referenced before their contents are set (recursive schemas). */
int gram_node(gram *g, enum gram_kind kind, char *err, size_t errlen);
/* The shared node for any JSON value (objects, arrays, strings, numbers, literals). */
int gram_any(gram *g, char *err, size_t errlen);
int gram_alt_add(gram *g, int alt, int node, char *err, size_t errlen);
/* Adds the exact bytes s[0..n) as one choice of a LIT node. */
int gram_lit_add(gram *g, int lit, const char *s, size_t n, char *err, size_t errlen);
/* max_len < 0: unbounded. */
int gram_str_set(gram *g, int str, long min_len, long max_len, char *err, size_t errlen);
/* Bounds of an INT or NUM node; each has_* false = unbounded on that side; ex_* = exclusive.
 * Values beyond what the digit limits can write are clamped; an empty range is an error. */
int gram_num_set(gram *g, int num, bool has_lo, double lo, bool ex_lo, bool has_hi, double hi,
                 bool ex_hi, char *err, size_t errlen);
/* A property of an OBJ node in declaration order: key is the raw (unescaped) name. */
int gram_obj_prop(gram *g, int obj, const char *key, size_t key_len, int value, bool required,
                  char *err, size_t errlen);
/* Extra keys allowed, their values matching node extra (< 0: no extra keys, the default). */
int gram_obj_extra(gram *g, int obj, int extra, char *err, size_t errlen);
int gram_arr_prefix(gram *g, int arr, int item, char *err, size_t errlen);
/* items < 0: no items beyond the prefix; max_items < 0: unbounded. */
int gram_arr_set(gram *g, int arr, int items, long min_items, long max_items, char *err,
                 size_t errlen);
/* A callable of a CALLS node: name (raw bytes), params an OBJ node (written as keyword
 * arguments name=value; its property names must be identifiers). max_calls of CALLS: 1 or more. */
int gram_calls_add(gram *g, int calls, const char *name, size_t name_len, int params, char *err,
                   size_t errlen);
int gram_calls_set_max(gram *g, int calls, int max_calls);
/* Finishes the graph with root as the value to write: checks every node is set, computes each
 * node's least nesting to finish (an unsatisfiable or endlessly recursive node is an error
 * naming it by the label given to gram_label, e.g. a schema path) and builds the key tries.
 * After this the gram is immutable. */
int gram_finish(gram *g, int root, char *err, size_t errlen);
/* Names node for error messages ("#/properties/a"); copied. Optional. */
void gram_label(gram *g, int node, const char *label);
int gram_n_nodes(const gram *g);
int gram_node_kind(const gram *g, int node); /* enum gram_kind, or -1 for a bad id */
bool gram_py(const gram *g);                 /* built with py (Python literals) */
bool gram_uses_calls(const gram *g);         /* the root is a CALLS node: needs the call tokens */

/* ---- the vocabulary ---- */

/* A byte trie of every token's piece (NORMAL, BYTE and USER_DEFINED tokens; CONTROL tokens only
 * as whole tokens by id: EOS, <|tool_call_start|>, <|tool_call_end|>). Immutable, shared. */
typedef struct gram_vocab gram_vocab;
int gram_vocab_new(gram_vocab **out, const tok *t, char *err, size_t errlen);
void gram_vocab_free(gram_vocab *v); /* NULL is a no-op */
int gram_vocab_n(const gram_vocab *v);
int gram_vocab_eos(const gram_vocab *v);
bool gram_vocab_has_calls(const gram_vocab *v); /* the tool-call tokens exist */

/* ---- the matcher ---- */

typedef struct gram_matcher gram_matcher;
/* g must be finished; both must outlive the matcher. Allocates its scratch (it grows only while
 * the deepest parse seen grows). */
int gram_matcher_new(gram_matcher **out, const gram *g, const gram_vocab *v, char *err,
                     size_t errlen);
void gram_matcher_free(gram_matcher *m); /* NULL is a no-op */
/* Whether token id may come next (EOS only once the value is complete). */
bool gram_matcher_allows(gram_matcher *m, int32_t id);
/* Takes token id: false (state unchanged) when it is not allowed. */
bool gram_matcher_accept(gram_matcher *m, int32_t id);
/* Feeds raw bytes (tests): false (state unchanged) when they do not continue a valid prefix. */
bool gram_matcher_feed(gram_matcher *m, const char *s, size_t n);
/* The value is complete (EOS allowed). */
bool gram_matcher_complete(const gram_matcher *m);
/* Nothing but EOS can follow. */
bool gram_matcher_finished(const gram_matcher *m);
/* The tokens that may come next, into ids (n_vocab entries), each once; returns how many (never
 * 0: some continuation always exists). Walks the vocabulary trie, pruning every branch at its
 * first refused byte. */
int gram_matcher_allowed(gram_matcher *m, int32_t *ids);
/* The same as a map: allowed[id] = 1 or 0 (n_vocab bytes); returns the count (allocates). */
int gram_matcher_mask(gram_matcher *m, uint8_t *allowed);

/* Samples the next token under the constraint, lazily: the sampler's unconstrained choice is kept
 * when m allows it (that one token is checked); otherwise the allowed tokens are listed (into
 * ids, n_vocab entries of scratch) and the sampler draws again among them
 * (sampler_sample_among). For a plain draw this is exact sampling from the masked, renormalized
 * distribution: P(t) = p(t) + P(refused) p(t) / P(allowed) = p(t) / P(allowed) (top-k/top-p/min-p
 * then apply to the allowed tokens, as llama.cpp's grammar resampling does). When logit_bias bans
 * every allowed token, the allowed token of highest logit. res (may be NULL) carries log-probs of
 * the model's own unconstrained distribution (logits) for the chosen token and the top
 * alternatives. Does not accept the token. Returns it, or -1 when nothing is allowed (cannot happen
 * for a finished gram unless memory ran out). */
struct sampler;
struct sample_result;
int32_t gram_sample(gram_matcher *m, struct sampler *smp, const float *logits, int32_t *ids,
                    struct sample_result *res);
/* Draws so far that kept the unconstrained choice, and that needed the full mask. */
void gram_matcher_stats(const gram_matcher *m, long *n_kept, long *n_masked);

#endif
