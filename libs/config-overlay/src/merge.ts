export type JsonObject = Record<string, unknown>;

export function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * RFC 7386 JSON merge patch: objects merge recursively, `null` deletes a member, arrays and
 * scalars replace. Pure: neither argument is mutated. The same rule is D34's effective merge,
 * so one function serves PUT-as-patch and the scope overlay.
 */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return patch;
  const out: JsonObject = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    // Writes refuse it (unknownConfigKeys); assigning it would set out's prototype instead.
    if (k === '__proto__') continue;
    if (v === null) delete out[k];
    else if (v !== undefined) out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

/**
 * Effective config across scopes (D34): `layers` ordered system → org → team → workflow → step;
 * each later layer is merged over the earlier ones.
 */
export function mergeEffective(layers: readonly JsonObject[]): JsonObject {
  let acc: JsonObject = {};
  for (const l of layers) acc = applyMergePatch(acc, l) as JsonObject;
  return acc;
}
