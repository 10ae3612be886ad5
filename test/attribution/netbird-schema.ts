// NetBird's OpenAPI file (test/fixtures/netbird/openapi.yml, vendored unchanged) as JSON-schema
// validators for the responses the NetBird source reads, so test fixtures cannot drift from the
// real API. OpenAPI 3.1 schemas are JSON Schema 2020-12 plus annotation keywords; the conversion:
//  - `#/components/schemas/X` references point into `$defs` of one generated root schema;
//  - OpenAPI 3.0's `nullable: true` (still used in a few places) becomes a "null" type;
//  - fixtures may only use properties the schema defines: every place an object schema is used
//    (not where it is composed with allOf) gets `unevaluatedProperties: false`, so a misspelt
//    optional field fails instead of being silently ignored;
//  - one fix-up: `ResourceType` is written as allOf [enum host|subnet|domain, enum peer], which no
//    value can satisfy (the generated Go type accepts all four); it is validated as their union.
//    `upstreamResourceTypeIsUnsatisfiable` lets a test notice when upstream fixes it.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { parse } from 'yaml';

export const OPENAPI_PATH = join(__dirname, '..', 'fixtures', 'netbird', 'openapi.yml');

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObj = { [k: string]: Json };

const ANNOTATIONS = ['example', 'x-omit-from-example', 'x-experimental', 'x-cloud-only', 'discriminator', 'xml', 'externalDocs'];

let doc: JsonObj | undefined;
function openapi(): JsonObj {
  doc ??= parse(readFileSync(OPENAPI_PATH, 'utf8')) as JsonObj;
  return doc;
}

const isObj = (v: Json | undefined): v is JsonObj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** OpenAPI schema → JSON Schema 2020-12 (see the file comment). `inAllOf`: v is a direct allOf member. */
function convert(v: Json, inAllOf = false): Json {
  if (Array.isArray(v)) return v.map((x) => convert(x));
  if (!isObj(v)) return v;
  const out: JsonObj = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === 'nullable') continue;
    if (k === '$ref' && typeof x === 'string') {
      const m = /^#\/components\/schemas\/(.+)$/.exec(x);
      if (!m) throw new Error(`unsupported $ref ${x}`);
      out.$ref = `#/$defs/${m[1]}`;
      continue;
    }
    if (k === 'allOf' && Array.isArray(x)) {
      out.allOf = x.map((y) => convert(y, true));
      continue;
    }
    // `properties` and the like map names to schemas: keep the names, convert the schemas.
    if ((k === 'properties' || k === 'patternProperties' || k === '$defs') && isObj(x)) {
      out[k] = Object.fromEntries(Object.entries(x).map(([n, s]) => [n, convert(s)]));
      continue;
    }
    out[k] = convert(x);
  }
  if (v.nullable === true && typeof v.type === 'string') out.type = [v.type, 'null'];
  if (typeof out.$ref === 'string' && !inAllOf) out.unevaluatedProperties = false;
  return out;
}

function defs(fixups: boolean): JsonObj {
  const components = openapi().components as JsonObj;
  const schemas = components.schemas as JsonObj;
  const out: JsonObj = {};
  for (const [name, s] of Object.entries(schemas)) out[name] = convert(s);
  if (fixups) {
    const nrt = schemas.NetworkResourceType as JsonObj;
    out.ResourceType = { type: 'string', enum: [...(nrt.enum as string[]), 'peer'] };
  }
  return out;
}

function newAjv(): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, strictTypes: false });
  for (const k of ANNOTATIONS) ajv.addKeyword(k);
  ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i);
  ajv.addFormat('ipv4', (s: string) => isIP(s) === 4);
  ajv.addFormat('ipv6', (s: string) => isIP(s) === 6);
  ajv.addFormat('cidr', (s: string) => {
    const m = /^(.+)\/(\d{1,3})$/.exec(s);
    const fam = m ? isIP(m[1]) : 0;
    return fam !== 0 && Number(m![2]) <= (fam === 4 ? 32 : 128);
  });
  ajv.addFormat('email', /^[^\s@]+@[^\s@]+$/);
  ajv.addFormat('uri', (s: string) => URL.canParse(s));
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isInteger(n) });
  ajv.addFormat('double', { type: 'number', validate: () => true });
  ajv.addFormat('password', () => true);
  return ajv;
}

const cache = new Map<string, ValidateFunction>();

/** The 200 response schema of GET `path` (as the OpenAPI file spells it: "/api/networks/{networkId}/resources"). */
export function responseSchema(path: string): Json {
  const paths = openapi().paths as JsonObj;
  const op = isObj(paths[path]) ? (paths[path] as JsonObj).get : undefined;
  if (!isObj(op)) throw new Error(`the OpenAPI file has no GET ${path}`);
  const schema = (((((op.responses as JsonObj)['200'] as JsonObj).content as JsonObj)['application/json'] as JsonObj).schema);
  if (schema === undefined) throw new Error(`GET ${path} has no JSON 200 response`);
  return schema;
}

function compile(path: string, fixups: boolean): ValidateFunction {
  const key = `${fixups}:${path}`;
  let v = cache.get(key);
  if (!v) {
    const root = { $schema: 'https://json-schema.org/draft/2020-12/schema', $defs: defs(fixups), ...(convert(responseSchema(path)) as JsonObj) };
    v = newAjv().compile(root);
    cache.set(key, v);
  }
  return v;
}

function describeErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? ''}${e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ''}`);
}

/** Problems of `body` as the 200 response of GET `path` ([] = valid). */
export function schemaErrors(path: string, body: unknown): string[] {
  const v = compile(path, true);
  return v(body) ? [] : describeErrors(v.errors);
}

/** Does the unchanged upstream schema still reject every Resource type (the reason for the fix-up)? */
export function upstreamResourceTypeIsUnsatisfiable(): boolean {
  const v = compile('/api/groups', false);
  const group = { id: 'g', name: 'g', peers_count: 0, resources_count: 1, peers: [], resources: [{ id: 'r', type: 'host' }] };
  return !v([group]);
}
