/* tojson.h: JSON text the way Jinja's tojson filter (Python json.dumps) writes it. */
#ifndef LFM2_API_TOJSON_H
#define LFM2_API_TOJSON_H
#include <cjson/cJSON.h>
#include <stddef.h>

/* v as HF transformers' tojson renders it in chat templates: json.dumps with ensure_ascii=False
 * and the default separators ", " and ": ", keys in v's order, non-ASCII text as is, control
 * characters as \uXXXX except \b \f \n \r \t. Numbers: integral values below 2^53 print as
 * integers (cJSON does not keep "1.0" apart from "1"), others as the shortest text that reads
 * back, with ".0" added when it would look like an integer (Python's float repr).
 * Returns malloc'd NUL-terminated text the caller frees, or NULL when out of memory. */
char *tojson_print(const cJSON *v);

/* v as Python's str() of the value Jinja holds (the templates' `arg | string`): strings raw at
 * top level and repr'd ('single quotes' unless the text has ' and no ") inside lists and dicts,
 * True/False/None, lists "[a, b]", dicts "{'k': v}". NULL when out of memory. */
char *tojson_pystr(const cJSON *v);

#endif
