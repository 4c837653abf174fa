// Choosing the next token from one position's logits: greedy (temperature 0), or sampling at a temperature
// from the smallest set of most likely tokens whose probability reaches top_p (nucleus sampling, as
// transformers' TopPLogitsWarper: the token that crosses top_p is kept).

export interface Sampling {
  /** 0 = greedy (argmax; ties to the lowest id). */
  temperature: number;
  /** In (0, 1]; 1 = the whole distribution. */
  topP: number;
}

export const GREEDY: Sampling = { temperature: 0, topP: 1 };

/** The id of the largest logit (the lowest id among ties). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The sampling distribution over ids after temperature and top-p: ids in decreasing probability and their
 * renormalised probabilities (the ones top-p keeps). Float64 throughout.
 */
export function nucleus(logits: ArrayLike<number>, s: Sampling): { ids: number[]; probs: Float64Array } {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  const p = new Float64Array(n);
  let z = 0;
  for (let i = 0; i < n; i++) z += p[i] = Math.exp((logits[i] - max) / s.temperature);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  const ids: number[] = [];
  let mass = 0;
  for (const i of order) {
    ids.push(i);
    mass += p[i] / z;
    if (mass >= s.topP) break;
  }
  const probs = Float64Array.from(ids, (i) => p[i]);
  const kept = probs.reduce((a, b) => a + b, 0);
  for (let i = 0; i < probs.length; i++) probs[i] /= kept;
  return { ids, probs };
}

/** The next token: argmax at temperature 0, else a draw (uniform `u` in [0, 1)) from `nucleus`. */
export function sampleToken(logits: ArrayLike<number>, s: Sampling, u: number): number {
  if (s.temperature === 0) return argmax(logits);
  const { ids, probs } = nucleus(logits, s);
  let c = 0;
  for (let i = 0; i < ids.length; i++) if ((c += probs[i]) > u) return ids[i];
  return ids[ids.length - 1];
}
