// jsonschema.mjs: a JSON Schema validator for the keywords lfm2 compiles (imported by the e2e
// scripts that check constrained output; not a test itself).
// validate(schema, value): the first problem found, or null.
export function validate(schema, v, root = schema, path = "#") {
  if (schema === true || schema === undefined) return null;
  if (schema === false) return `${path}: false schema`;
  if (schema.$ref) {
    const t = schema.$ref.slice(2).split("/").filter(Boolean).reduce((o, k) => o[k.replace(/~1/g, "/").replace(/~0/g, "~")], root);
    return validate(t, v, root, path);
  }
  if (schema.anyOf) {
    return schema.anyOf.some((s) => validate(s, v, root, path) === null) ? null : `${path}: no anyOf branch`;
  }
  if (schema.oneOf) {
    const n = schema.oneOf.filter((s) => validate(s, v, root, path) === null).length;
    return n === 1 ? null : `${path}: ${n} oneOf branches match`;
  }
  if (schema.allOf) {
    for (const s of schema.allOf) { const e = validate(s, v, root, path); if (e) return e; }
  }
  if ("const" in schema && JSON.stringify(schema.const) !== JSON.stringify(v)) return `${path}: not the const`;
  if (schema.enum && !schema.enum.some((x) => JSON.stringify(x) === JSON.stringify(v))) return `${path}: not in enum`;
  const typeOf = (x) => x === null ? "null" : Array.isArray(x) ? "array" : typeof x === "number" ? (Number.isInteger(x) ? "integer" : "number") : typeof x;
  if (schema.type) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    const t = typeOf(v);
    if (!types.includes(t) && !(t === "integer" && types.includes("number"))) return `${path}: type ${t}, want ${types}`;
  }
  if (typeof v === "string") {
    const n = [...v].length;
    if (schema.minLength !== undefined && n < schema.minLength) return `${path}: shorter than ${schema.minLength}`;
    if (schema.maxLength !== undefined && n > schema.maxLength) return `${path}: longer than ${schema.maxLength}`;
  }
  if (typeof v === "number") {
    if (schema.minimum !== undefined && v < schema.minimum) return `${path}: ${v} < minimum`;
    if (schema.maximum !== undefined && v > schema.maximum) return `${path}: ${v} > maximum`;
    if (schema.exclusiveMinimum !== undefined && v <= schema.exclusiveMinimum) return `${path}: ${v} <= exclusiveMinimum`;
    if (schema.exclusiveMaximum !== undefined && v >= schema.exclusiveMaximum) return `${path}: ${v} >= exclusiveMaximum`;
  }
  if (Array.isArray(v)) {
    if (schema.minItems !== undefined && v.length < schema.minItems) return `${path}: fewer than ${schema.minItems} items`;
    if (schema.maxItems !== undefined && v.length > schema.maxItems) return `${path}: more than ${schema.maxItems} items`;
    const pre = schema.prefixItems ?? [];
    for (let i = 0; i < v.length; i++) {
      const s = i < pre.length ? pre[i] : schema.items;
      const e = validate(s, v[i], root, `${path}/${i}`);
      if (e) return e;
    }
  }
  if (v && typeof v === "object" && !Array.isArray(v)) {
    for (const k of schema.required ?? []) if (!(k in v)) return `${path}: missing ${k}`;
    const props = schema.properties ?? {};
    for (const [k, x] of Object.entries(v)) {
      const s = k in props ? props[k] : schema.additionalProperties;
      if (s === false) return `${path}: extra key ${k}`;
      const e = validate(s, x, root, `${path}/${k}`);
      if (e) return e;
    }
  }
  return null;
}

