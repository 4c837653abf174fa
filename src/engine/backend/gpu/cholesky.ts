// GPTQ's Hinv (upper U with UᵀU = H⁻¹) computed on the engine's own WebGPU device (dawn.ts)
// and left there for the fused GPTQ loop (gptq_loop.ts): no n² readback and re-upload
// between an ORT Cholesky and the Dawn loop (485 MB each way for a 11008-column layer).
//
// Same algebra as the float64 twin (quant/gptq_linalg.ts choleskyInverseUpper): with J the reversal,
// J·H·J = L̃·L̃ᵀ, and U = J·L̃⁻¹·J. On a row-major n×n array, X ↦ J·X·J is the reversal of the whole
// array, so: reverse H into A, factor A in place (blocked, panel BS: a diagonal block per workgroup,
// the panel below, the trailing update as a GEMM), invert L̃ by doubling (the diagonal blocks'
// inverses come from the factorisation; level s joins pairs of s-blocks: M21 = −M22·L21·M11, one
// batched GEMM pair per level), then U = reverse(M). Everything is float32 (the ORT path keeps float64
// leaves); tests compare against the float64 twin.

import type { DawnGpu, Dispatch } from './dawn';
import { NotPositiveDefiniteError } from '../../linalg/not_positive_definite';
import { BS, choleskyDiagWgsl, choleskyPanelWgsl, reverseWgsl } from './cholesky_wgsl';
import { gemmGroups, gemmWgsl, gemmWords } from './wgsl_gemm';
import { splitEntries } from './split';

/**
 * U on `gpu` as a float32 n×n buffer (the caller destroys it); `parts`: where H's and U's binding parts start
 * (split.ts), for an n×n wider than one binding. H: host values, or a float32 n×n buffer
 * already on `gpu` (read only, the caller keeps it). Throws NotPositiveDefiniteError on a
 * non-positive pivot (index in J·H·J's order, as the float64 twin).
 */
export async function choleskyInverseUpperDawn(gpu: DawnGpu, H: Float32Array | Float64Array | GPUBuffer, n: number, parts: readonly number[] = [0]): Promise<GPUBuffer> {
  if ((H instanceof Float32Array || H instanceof Float64Array) && H.length !== n * n) throw new RangeError(`H has ${H.length} values, expected ${n}×${n}`);
  const N = n * n;
  const [diag, panel, syrk, gemm1, gemm2, reverse] = [
    await gpu.pipeline(choleskyDiagWgsl(parts)),
    await gpu.pipeline(choleskyPanelWgsl(parts)),
    await gpu.pipeline(gemmWgsl(true, true, true, true, { c: parts })), // A22 −= L21·L21ᵀ, all in A
    await gpu.pipeline(gemmWgsl(false, false, false, false, { a: parts, b: parts })), // T = L21·M11
    await gpu.pipeline(gemmWgsl(false, false, true, false, { c: parts })), // M21 = −M22·T, M22 read from M
    await gpu.pipeline(reverseWgsl(parts)),
  ];
  // An n×n matrix of this factorisation at binding b, whole or in its binding parts.
  const at = (buf: GPUBuffer, b: number) => splitEntries(b, buf, parts, N);
  const temps: GPUBuffer[] = [];
  const temp = (b: GPUBuffer) => (temps.push(b), b);
  let maxT = 0;
  for (let s = BS; s < n; s *= 2) maxT = Math.max(maxT, Math.ceil((n - s) / (2 * s)) * s * s);
  const A = gpu.buffer(4 * N, 'chol A');
  try {
    const Hb = H instanceof Float32Array || H instanceof Float64Array ? temp(await gpu.bufferFrom(H, 'H')) : H;
    const M = temp(gpu.buffer(4 * N, 'chol M')); // zero-initialised: L̃⁻¹ is lower, its upper part must read 0
    const T = temp(gpu.buffer(4 * Math.max(1, maxT), 'chol T'));
    const status = temp(gpu.buffer(8, 'chol status'));
    const revGroups = Math.min(65535, Math.ceil(N / 256));
    const revU = temp(gpu.uniforms([N, revGroups * 256, 0, 0]));
    const steps: Dispatch[] = [];
    steps.push({ pipe: reverse, group: gpu.bindGroup(reverse, [revU, at(Hb, 1), at(A, 2)]), size: [revGroups, 1, 1] }); // A = J·H·J
    for (let k0 = 0; k0 < n; k0 += BS) {
      const kb = Math.min(BS, n - k0),
        rest = n - k0 - kb;
      const u = temp(gpu.uniforms([n, k0, kb, 0]));
      steps.push({ pipe: diag, group: gpu.bindGroup(diag, [u, at(A, 1), at(M, 2), status]), size: [1, 1, 1] });
      if (rest === 0) continue;
      steps.push({ pipe: panel, group: gpu.bindGroup(panel, [u, at(A, 1), at(M, 2)]), size: [Math.ceil(rest / 64), 1, 1] }); // 64 rows per workgroup
      const off = (k0 + kb) * n + k0;
      const g = temp(gpu.uniforms(gemmWords({ M: rest, N: rest, K: kb, lda: n, ldb: n, ldc: n, offA: off, offB: off, offC: off + kb, alpha: -1, beta: 1 })));
      steps.push({ pipe: syrk, group: gpu.bindGroup(syrk, [g, undefined, undefined, at(A, 3)]), size: gemmGroups(rest, rest) });
    }
    for (let s = BS; s < n; s *= 2) {
      const pairs = Math.ceil((n - s) / (2 * s)),
        zBlock = 2 * s * (n + 1);
      const rag = { limBase: n - s, limStride: 2 * s };
      const g1 = temp(
        gpu.uniforms(gemmWords({ M: s, N: s, K: s, lda: n, ldb: n, ldc: s, offA: s * n, offB: 0, offC: 0, zA: zBlock, zB: zBlock, zC: s * s, ...rag, alpha: 1, beta: 0 })),
      );
      const g2 = temp(
        gpu.uniforms(
          gemmWords({
            M: s,
            N: s,
            K: s,
            lda: n,
            ldb: s,
            ldc: n,
            offA: s * n + s,
            offB: 0,
            offC: s * n,
            zA: zBlock,
            zB: s * s,
            zC: zBlock,
            ...rag,
            raggedK: true,
            alpha: -1,
            beta: 0,
          }),
        ),
      );
      steps.push({ pipe: gemm1, group: gpu.bindGroup(gemm1, [g1, at(A, 1), at(M, 2), T]), size: gemmGroups(s, s, pairs) });
      steps.push({ pipe: gemm2, group: gpu.bindGroup(gemm2, [g2, undefined, T, at(M, 3)]), size: gemmGroups(s, s, pairs) });
    }
    steps.push({ pipe: reverse, group: gpu.bindGroup(reverse, [revU, at(M, 1), at(A, 2)]), size: [revGroups, 1, 1] }); // U = J·L̃⁻¹·J
    await gpu.dispatchAll(steps);
    const [failed, bits] = new Uint32Array(await gpu.read(status, 8));
    if (failed !== 0) throw new NotPositiveDefiniteError(failed - 1, new Float32Array(Uint32Array.of(bits).buffer)[0]);
    return A;
  } catch (e) {
    A.destroy();
    throw e;
  } finally {
    for (const b of temps) b.destroy();
  }
}
