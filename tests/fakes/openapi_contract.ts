/**
 * Checks HTTP requests against an OpenAPI 3.0 or Swagger 2.0 document (the
 * subset VMM API documents use: templated paths, a JSON body, $ref, object/array/string/integer/number/boolean, required,
 * properties, additionalProperties, items, enum, minimum, integer formats).
 * Stricter than the VMMs in one way, on purpose: a property the schema does
 * not name is a violation (a misspelt key would otherwise be dropped by the
 * VMM without a word).
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type Schema = Record<string, any>;

/** Integer formats and the ranges they allow. */
const RANGES: Record<string, [number, number]> = {
  int8: [-128, 127],
  uint8: [0, 255],
  int16: [-32768, 32767],
  uint16: [0, 65535],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint64: [0, Number.MAX_SAFE_INTEGER],
};

export class OpenApiContract {
  readonly #doc: Schema;
  readonly #base: string;

  /**
   * `doc` as parsed JSON; requests' paths are taken relative to its first server's path
   * (OpenAPI 3) or its basePath (Swagger 2).
   */
  constructor(doc: Schema) {
    this.#doc = doc;
    const base = doc.swagger
      ? doc.basePath ?? "/"
      : new URL(doc.servers?.[0]?.url ?? "http://localhost/").pathname;
    this.#base = base.replace(/\/$/, "");
  }

  /** The document's path (template) that `name` is, and its path parameters. */
  #match(name: string): { template: string; params: Record<string, string> } | undefined {
    const paths = this.#doc.paths ?? {};
    if (Object.hasOwn(paths, name)) return { template: name, params: {} };
    for (const template of Object.keys(paths)) {
      const names: string[] = [];
      const re = new RegExp(
        "^" + template.replace(/[.+*?^$()[\]\\|]/g, "\\$&").replace(/\{([^}]+)\}/g, (_, n) => {
          names.push(n);
          return "([^/]+)";
        }) + "$",
      );
      const m = re.exec(name);
      if (m && names.length) {
        return {
          template,
          params: Object.fromEntries(names.map((n, i) => [n, m[i + 1]])),
        };
      }
    }
    return undefined;
  }

  /** The operation for `method path`, or why there is none (unknown path, wrong method). */
  operation(
    method: string,
    path: string,
  ): { op: Schema; name: string; params: Record<string, string> } | string {
    if (!path.startsWith(this.#base + "/")) return `${path} is outside ${this.#base}`;
    const name = path.slice(this.#base.length);
    const found = this.#match(name);
    if (!found) return `${method} ${name}: no such path in the API`;
    const item = this.#doc.paths[found.template];
    const op = item[method.toLowerCase()];
    if (!op) {
      return `${method} ${name}: the API has only ${
        Object.keys(item).map((m) => m.toUpperCase()).join(", ")
      } here`;
    }
    return { op, name, params: found.params };
  }

  /** Whether the document has `path` (whatever the method). */
  hasPath(path: string): boolean {
    return path.startsWith(this.#base + "/") && !!this.#match(path.slice(this.#base.length));
  }

  /** What is wrong with a request (empty: nothing). `body` undefined: no body was sent. */
  checkRequest(method: string, path: string, body: unknown): string[] {
    const found = this.operation(method, path);
    if (typeof found === "string") return [found];
    // OpenAPI 3: requestBody; Swagger 2: the parameter `in: body`.
    const param = (found.op.parameters ?? []).find((p: Schema) => p.in === "body");
    const rb = found.op.requestBody ?? param;
    const schema = param ? param.schema : rb?.content?.["application/json"]?.schema;
    if (body === undefined) {
      return rb?.required ? [`${method} ${found.name}: the API requires a body`] : [];
    }
    if (!schema) return [`${method} ${found.name}: the API takes no body`];
    return this.validate(schema, body, found.name);
  }

  /** What is wrong with `value` against `schema` (empty: nothing). */
  validate(schema: Schema, value: unknown, at: string): string[] {
    if (schema.$ref) return this.validate(this.#resolve(schema.$ref), value, at);
    if (value === null) return schema.nullable ? [] : [`${at}: null`];
    const out: string[] = [];
    switch (schema.type) {
      case "object": {
        if (typeof value !== "object" || Array.isArray(value)) return [`${at}: not an object`];
        const v = value as Record<string, unknown>;
        for (const r of schema.required ?? []) {
          if (!Object.hasOwn(v, r)) out.push(`${at}: ${r} is required`);
        }
        for (const [k, x] of Object.entries(v)) {
          const p = schema.properties && Object.hasOwn(schema.properties, k)
            ? schema.properties[k]
            : undefined;
          if (p) out.push(...this.validate(p, x, `${at}.${k}`));
          else if (typeof schema.additionalProperties === "object") {
            out.push(...this.validate(schema.additionalProperties, x, `${at}.${k}`));
          } else if (schema.properties || schema.additionalProperties === false) {
            out.push(`${at}: ${k} is not a property of the schema`);
          }
        }
        break;
      }
      case "array":
        if (!Array.isArray(value)) return [`${at}: not an array`];
        value.forEach((x, i) => out.push(...this.validate(schema.items ?? {}, x, `${at}[${i}]`)));
        break;
      case "string":
        if (typeof value !== "string") return [`${at}: not a string`];
        break;
      case "boolean":
        if (typeof value !== "boolean") return [`${at}: not a boolean`];
        break;
      case "integer": {
        if (typeof value !== "number" || !Number.isInteger(value)) return [`${at}: not an integer`];
        const r = RANGES[schema.format ?? "int64"];
        if (r && (value < r[0] || value > r[1])) {
          out.push(`${at}: ${value} is not ${schema.format ?? "int64"}`);
        }
        break;
      }
      case "number":
        if (typeof value !== "number") return [`${at}: not a number`];
        break;
    }
    if (schema.enum && !schema.enum.includes(value)) {
      out.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
    }
    if (typeof schema.minimum === "number" && typeof value === "number" && value < schema.minimum) {
      out.push(`${at}: ${value} is below ${schema.minimum}`);
    }
    if (typeof schema.maximum === "number" && typeof value === "number" && value > schema.maximum) {
      out.push(`${at}: ${value} is above ${schema.maximum}`);
    }
    return out;
  }

  /** The schema a response of `method path` with `status` declares, if any. */
  responseSchema(method: string, path: string, status: number): Schema | undefined {
    const found = this.operation(method, path);
    if (typeof found === "string") return undefined;
    const r = found.op.responses?.[String(status)] ?? found.op.responses?.default;
    return r?.schema ?? r?.content?.["application/json"]?.schema;
  }

  /** Whether the API declares `status` for `method path`. */
  declares(method: string, path: string, status: number): boolean {
    const found = this.operation(method, path);
    return typeof found !== "string" && String(status) in (found.op.responses ?? {});
  }

  #resolve(ref: string): Schema {
    if (!ref.startsWith("#/")) throw new Error(`external $ref ${ref}`);
    let cur: Schema = this.#doc;
    for (const part of ref.slice(2).split("/")) cur = cur?.[part];
    if (!cur) throw new Error(`dangling $ref ${ref}`);
    return cur;
  }
}
