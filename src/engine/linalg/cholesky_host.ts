// Host-resident variant of the blocked Cholesky (see cholesky.ts for the algorithm): the working matrix
// and the results stay float64 in JS memory; ORT computes only the products (f32), and the Schur
// complement is subtracted in float64. Best where ORT works on host memory anyway: the CPU EP (no
// copies at all) and the CUDA EP (whose node binding returns every output to JS). Measured on 2
// pinned cores of an idle Xeon, n = 4096: 1.74 s vs 1.87 s for the device-resident variant.

import { GraphBuilder } from '../compute/graph';
import type { ComputeRuntime } from '../compute/runtime';
import { cholLowerBlock, invertLowerBlock, packF32, subtractLowerF32, unpackF32 } from './cholesky_blocks';
import { NotPositiveDefiniteError } from './cholesky_ref';

export interface HostWork {
  rt: ComputeRuntime;
  n: number;
  leaf: number;
  /** Working copy of the input (n×n); its lower triangle becomes L. */
  a: Float64Array;
  /** Receives L⁻¹ (lower triangle; must start zeroed). */
  x: Float64Array;
  /** Maps a pivot index of the working matrix to the caller's index (the flipped case). */
  pivot: (i: number) => number;
}

/**
 * The recursion alternates ORT runs with TS work (leaves, packing); spinning ORT workers would steal the
 * cores that TS needs. Measured on 2 pinned cores, n = 4096: 1.14–1.31 s without spinning vs 1.37–1.64 s.
 */
const NO_SPIN = { allowSpinning: false };

/** Factor the diagonal block [o, o+m) of w.a in place and write its inverse factor into w.x. */
export async function factorHostResident(w: HostWork, o = 0, m = w.n): Promise<void> {
  const { n, a, x, rt } = w;
  if (m <= w.leaf) {
    const off = o * n + o;
    try {
      cholLowerBlock(a, off, n, m, o);
    } catch (e) {
      if (e instanceof NotPositiveDefiniteError) throw new NotPositiveDefiniteError(w.pivot(e.pivotIndex), e.pivotValue);
      throw e;
    }
    invertLowerBlock(a, off, x, off, n, m);
    return;
  }
  const h = w.leaf * Math.ceil(Math.ceil(m / w.leaf) / 2); // leaves stay full blocks
  const p = m - h;
  await factorHostResident(w, o, h);
  const x11 = packF32(x, n, o, o, h, h);
  const r1 = await rt.run(await rt.session('chol_host/panel', panelModel, 'host', NO_SPIN), { a21: rt.host(packF32(a, n, o + h, o, p, h), [p, h]), x11: rt.host(x11, [h, h]) });
  unpackF32(r1.l21.data as Float32Array, a, n, o + h, o, p, h); // L21 into the lower triangle of a
  subtractLowerF32(a, n, o + h, r1.p.data as Float32Array, p); // Schur complement in f64
  await factorHostResident(w, o + h, p);
  const r2 = await rt.run(await rt.session('chol_host/xinv', xinvModel, 'host', NO_SPIN), { x22: rt.host(packF32(x, n, o + h, o + h, p, p), [p, p]), l21: r1.l21, x11: rt.host(x11, [h, h]) });
  unpackF32(r2.x21.data as Float32Array, x, n, o + h, o, p, h);
}

/** L21 = A21·X11ᵀ and P = L21·L21ᵀ (symbolic shapes: one session for every size). */
function panelModel(): Uint8Array {
  const g = new GraphBuilder('chol_host_panel');
  const a21 = g.input('a21', 'float32', ['P', 'H']);
  const x11 = g.input('x11', 'float32', ['H', 'H']);
  const l21 = g.op('Gemm', [a21, x11], { transB: 1 });
  g.output(l21, 'l21');
  g.output(g.op('Gemm', [l21, l21], { transB: 1 }), 'p');
  return g.toModel();
}

/** X21 = −X22·(L21·X11). */
function xinvModel(): Uint8Array {
  const g = new GraphBuilder('chol_host_xinv');
  const x22 = g.input('x22', 'float32', ['P', 'P']);
  const l21 = g.input('l21', 'float32', ['P', 'H']);
  const x11 = g.input('x11', 'float32', ['H', 'H']);
  g.output(g.op('Gemm', [x22, g.op('MatMul', [l21, x11])], { alpha: -1 }), 'x21');
  return g.toModel();
}
