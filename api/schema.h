/* schema.h: JSON Schema (the subset structured outputs use) and response_format compiled into a
 * gram (engine/gram.h) that constrains decoding. */
#ifndef LFM2_API_SCHEMA_H
#define LFM2_API_SCHEMA_H
#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "api/request.h"
#include "engine/gram.h"

/* Compiles schema (any JSON value: an object, true or false) as the root of g, where root names
 * it in messages ("response_format.json_schema.schema"). Supported: type (a name or a list),
 * properties, required, additionalProperties (absent = no extra keys), enum, const, items,
 * prefixItems, minItems, maxItems, anyOf, oneOf (as anyOf), allOf of one schema, minLength,
 * maxLength, minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers or draft-4 booleans),
 * $ref to "#..." JSON pointers (recursive too), $defs/definitions. Annotations (title,
 * description, $schema, $id, $comment, examples, default, deprecated, readOnly, writeOnly) are
 * ignored. Any other keyword: error naming it and where it is. Returns the node id, or a negative
 * code with err filled. */
int schema_compile(gram *g, const cJSON *schema, const char *root, char *err, size_t errlen);

/* The chat/completions response_format field (NULL = absent): {"type":"text"} (*out NULL),
 * {"type":"json_object"} (any object; llama-server's optional "schema" beside it is honoured),
 * {"type":"json_schema","json_schema":{"name","schema","strict","description"}} (llama-server's
 * {"type":"json_schema","schema":{...}} too). On success *out is a finished gram or NULL; on
 * error a 400 in e naming the field (API_EINVAL) or 500 (API_ENOMEM). */
int schema_response_format(const cJSON *rf, gram **out, api_error *e);

/* The output of tool_choice "required" (only < 0) or a named function (only = its index in
 * tools): <|tool_call_start|>[name(key=value, ...), ...]<|tool_call_end|> in LFM2's Python style
 * (keyword arguments in the parameters' declared order, values as JSON with True/False/None),
 * each call's arguments valid against that tool's parameters (an object schema; absent = no
 * arguments), at most max_calls calls (< 0: any number, at least one). On success *out is a
 * finished gram; on error a 400 naming tools[i].function.parameters and the keyword. */
int schema_tools(const api_tool *tools, int n_tools, int only, int max_calls, gram **out,
                 api_error *e);

#endif
