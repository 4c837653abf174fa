// Editing a Hugging Face config.json without changing what its numbers are. JSON.parse forgets that
// `"router_jitter_noise": 0.0` was a float, JSON.stringify then writes `0`, and transformers' strict
// config classes refuse the int ("expected float, got int"). Numbers keep their source text here.

const MARK = '\u0000num:';

/** Parses config.json text; numbers written with a fraction or an exponent stay as their source text (marked strings). */
export function parseConfigText(text: string): Record<string, unknown> {
  // Strings are matched first so digits inside them are left alone.
  const marked = text.replace(/"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g, (m) => (m.startsWith('"') || !/[.eE]/.test(m) ? m : JSON.stringify(MARK + m)));
  return JSON.parse(marked) as Record<string, unknown>;
}

/** Serializes what parseConfigText read (edited), writing each kept number as its source text. */
export function stringifyConfig(cfg: Record<string, unknown>): string {
  const esc = JSON.stringify(MARK).slice(1, -1);
  return JSON.stringify(cfg, null, 2).replace(new RegExp(`"${esc.replace(/\\/g, '\\\\')}([^"]*)"`, 'g'), '$1') + '\n';
}
