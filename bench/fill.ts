// Deterministic test data for the EP probes: n uniform values in [−scale/2, scale/2) from a 32-bit LCG.
// Speed probes only need reproducible, non-constant inputs; numerical tests use test/unit/compute/_seeded.ts.
export function fillUniform(n: number, scale: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s >>> 8) / 16777216 - 0.5) * scale;
  }
  return a;
}
