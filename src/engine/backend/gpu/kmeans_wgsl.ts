// GPTVQ's codebook k-means (quant/kmeans.ts weightedKMeans) as WGSL kernels on the GPU backend's device, so that
// a codebook group's points never leave it (kmeans_dawn.ts runs them). The same algorithm in float32: k-means++
// seeding, Lloyd iterations until no assignment changes, an empty cluster re-seeded at the worst-fit point.
//
// The points are the group's columns of W as they stand: point p = r·perRow + v is W[r, j + v·D : j + v·D + D],
// its weights colW[j + v·D + t] (1/Ud², one per column). Chunks of WG·ppt points are a workgroup's. State that
// the host would otherwise decide on lives in `ctl` (u32s), so a whole k-means is one fixed list of dispatches:
//   ctl[0] next seed index, ctl[1] the seed just placed, ctl[2] Lloyd iteration, ctl[3] converged (later
//   iterations are no-ops), ctl[4] some assignment changed in this iteration.
// Every sum is a fixed tree or a fixed sequence (no float atomics): the result does not depend on scheduling.

/**
 * Invocations per workgroup of the per-point kernels (best, assign), each taking ppt points of its chunk: few,
 * so that a chunk's slot sums are short loops and the seeding's scan over the chunks stays short.
 */
export const WG = 64;

/** The per-group uniform block's words (kmeansWords). */
const GP = 'struct GP { rows: u32, cols: u32, j: u32, perRow: u32, N: u32, ppt: u32, nc: u32, gi: u32 }';

/** Bindings, the same number in every kernel (each declares only those it uses). */
export const KM_BIND = { gp: 0, ctl: 1, W: 2, colW: 3, C: 4, best: 5, chunk: 6, draws: 7, assign: 8, pd: 9, partials: 10, sums: 11, codebooks: 12 } as const;

export interface KMeansShape {
  /** Vector dimension and codebook entries. */
  D: number;
  K: number;
}

const decl = (b: keyof typeof KM_BIND, access: 'read' | 'read_write', type: string) => `@group(0) @binding(${KM_BIND[b]}) var<storage, ${access}> ${b}: array<${type}>;`;

function common(s: KMeansShape, uses: (keyof typeof KM_BIND)[]): string {
  const types: Record<string, [string, 'read' | 'read_write']> = {
    ctl: ['atomic<u32>', 'read_write'],
    W: ['f32', 'read'],
    colW: ['f32', 'read'],
    C: ['f32', 'read_write'],
    best: ['f32', 'read_write'],
    chunk: ['f32', 'read_write'],
    draws: ['u32', 'read'],
    assign: ['u32', 'read_write'],
    pd: ['f32', 'read_write'],
    partials: ['f32', 'read_write'],
    sums: ['f32', 'read_write'],
    codebooks: ['f32', 'read_write'],
  };
  return /* wgsl */ `
${GP}
@group(0) @binding(0) var<uniform> gp: GP;
${uses.map((b) => decl(b, types[b][1], types[b][0])).join('\n')}
const D: u32 = ${s.D}u;
const K: u32 = ${s.K}u;
const KD: u32 = ${s.K * s.D}u;
const WG: u32 = ${WG}u;
// The largest float32 (a constant may not be infinite): the first "nearest" distance, as kmeans.ts's Infinity.
const BIG: f32 = 0x1.fffffep+127f;
var<workgroup> sc: array<f32, 256>;
${uses.includes('W') ? 'fn px(p: u32, t: u32) -> f32 { let r = p / gp.perRow; return W[r * gp.cols + gp.j + (p - r * gp.perRow) * D + t]; }' : ''}
${uses.includes('colW') ? 'fn pw(p: u32, t: u32) -> f32 { return colW[gp.j + (p % gp.perRow) * D + t]; }' : ''}
// Σ sc[0..WG) into sc[0] (a fixed tree).
fn tree_sum(lid: u32) {
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) { sc[lid] += sc[lid + s]; }
  }
  workgroupBarrier();
}
`;
}

/** Inclusive prefix sums of sc[0..256) in place (Hillis–Steele). */
const SCAN = /* wgsl */ `
fn scan(lid: u32) {
  for (var off = 1u; off < 256u; off <<= 1u) {
    workgroupBarrier();
    var v = sc[lid];
    if (lid >= off) { v += sc[lid - off]; }
    workgroupBarrier();
    sc[lid] = v;
  }
  workgroupBarrier();
}
`;

/**
 * Places seed c = ctl[0] (one workgroup): c = 0 at the drawn index; else, with total = Σ best, at the first
 * point whose running sum of best exceeds u·total (the chunk by the chunks' prefix sums, then the point within
 * it), or at the drawn index when total is 0 — kmeans.ts's k-means++ step. draws[2·(gi·K + c)] = u as f32
 * bits, [+1] = ⌊u·N⌋ (the host's SeededRng: the draws do not depend on the data).
 */
export function kmPickWgsl(s: KMeansShape): string {
  return /* wgsl */ `
${common(s, ['ctl', 'W', 'C', 'best', 'chunk', 'draws'])}
${SCAN}
var<workgroup> wgU: u32;
var<workgroup> wgF: f32;
var<workgroup> found: atomic<u32>;

// First index i in [i0, i0 + n) of src (chunk sums or best values) whose base + running sum exceeds r, or NONE;
// chunks: also leaves each chunk's exclusive prefix in chunk[] (the next best pass rewrites them).
const NONE: u32 = 0xffffffffu;
fn first_over(lid: u32, i0: u32, n: u32, base: f32, r: f32, chunks: bool) -> u32 {
  if (lid == 0u) { atomicStore(&found, NONE); }
  var carry = base;
  for (var t0 = 0u; t0 < n; t0 += 256u) {
    workgroupBarrier();
    let i = i0 + t0 + lid;
    var v = 0.0;
    if (t0 + lid < n) { if (chunks) { v = chunk[i]; } else { v = best[i]; } }
    sc[lid] = v;
    scan(lid);
    let inc = carry + sc[lid];
    if (t0 + lid < n) {
      if (inc > r) { atomicMin(&found, i); }
      if (chunks) {
        var before = carry;
        if (lid > 0u) { before += sc[lid - 1u]; }
        chunk[i] = before;
      }
    }
    carry += sc[255];
  }
  storageBarrier();
  workgroupBarrier();
  if (lid == 0u) { wgU = atomicLoad(&found); }
  return workgroupUniformLoad(&wgU);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u) {
  let lid = l.x;
  if (lid == 0u) { wgU = atomicLoad(&ctl[0]); }
  let c = workgroupUniformLoad(&wgU);
  let dr = (gp.gi * K + c) * 2u;
  var pick = draws[dr + 1u];
  if (c > 0u) {
    var total = 0.0;
    for (var t0 = 0u; t0 < gp.nc; t0 += 256u) {
      workgroupBarrier();
      var v = 0.0;
      if (t0 + lid < gp.nc) { v = chunk[t0 + lid]; }
      sc[lid] = v;
      scan(lid);
      total += sc[255];
    }
    if (lid == 0u) { wgF = total; }
    total = workgroupUniformLoad(&wgF);
    if (total > 0.0) {
      let r = bitcast<f32>(draws[dr]) * total;
      let kc = first_over(lid, 0u, gp.nc, 0.0, r, true);
      if (kc == NONE) {
        pick = gp.N - 1u;
      } else {
        let chunkPts = WG * gp.ppt;
        let p0 = kc * chunkPts;
        let n = min(chunkPts, gp.N - p0);
        if (lid == 0u) { wgF = chunk[kc]; }
        let base = workgroupUniformLoad(&wgF);
        let p = first_over(lid, p0, n, base, r, false);
        // Rounding may put the crossing just past the chunk its sum chose: its last point then.
        pick = select(p, p0 + n - 1u, p == NONE);
      }
    }
  }
  if (lid < D) { C[c * D + lid] = px(pick, lid); }
  if (lid == 0u) {
    atomicStore(&ctl[1], c);
    atomicStore(&ctl[0], c + 1u);
  }
}
`;
}

/** best[p] = min(best[p], dist(p, seed ctl[1])) (the seed 0 sets it), and each chunk's Σ best. */
export function kmBestWgsl(s: KMeansShape): string {
  return /* wgsl */ `
${common(s, ['ctl', 'W', 'colW', 'C', 'best', 'chunk'])}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let lid = l.x;
  let c = atomicLoad(&ctl[1]);
  var acc = 0.0;
  for (var q = 0u; q < gp.ppt; q++) {
    let p = (wg.x * gp.ppt + q) * WG + lid;
    if (p < gp.N) {
      var v = 0.0;
      for (var t = 0u; t < D; t++) {
        let e = px(p, t) - C[c * D + t];
        v += pw(p, t) * e * e;
      }
      var b = v;
      if (c > 0u) { b = min(best[p], v); }
      best[p] = b;
      acc += b;
    }
  }
  sc[lid] = acc;
  tree_sum(lid);
  if (lid == 0u) { chunk[wg.x] = sc[0]; }
}
`;
}

/**
 * One Lloyd assignment (unless converged): nearest centre of every point (first minimum), its distance, whether
 * any assignment changed (ctl[4]); then per chunk the weighted sums Σw and Σw·x of each (centre, dimension) slot
 * over the chunk's points in order (partials[(chunk·KD + slot)·2 + {0, 1}]).
 */
export function kmAssignWgsl(s: KMeansShape): string {
  return /* wgsl */ `
${common(s, ['ctl', 'W', 'colW', 'C', 'assign', 'pd', 'partials'])}
var<workgroup> wgU: u32;
var<workgroup> changed: atomic<u32>;
var<workgroup> sa: array<u32, WG>;
var<workgroup> sx: array<f32, ${WG * s.D}>;
var<workgroup> sw: array<f32, ${WG * s.D}>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let lid = l.x;
  if (lid == 0u) {
    wgU = atomicLoad(&ctl[3]);
    atomicStore(&changed, 0u); // not left to the device's workgroup-memory zeroing
  }
  if (workgroupUniformLoad(&wgU) != 0u) { return; }
  let first = wg.x * gp.ppt * WG;
  for (var q = 0u; q < gp.ppt; q++) {
    let p = first + q * WG + lid;
    if (p < gp.N) {
      var x: array<f32, D>;
      var w: array<f32, D>;
      for (var t = 0u; t < D; t++) { x[t] = px(p, t); w[t] = pw(p, t); }
      var bc = 0u;
      var bv = BIG;
      for (var c = 0u; c < K; c++) {
        var v = 0.0;
        for (var t = 0u; t < D; t++) {
          let e = x[t] - C[c * D + t];
          v += w[t] * e * e;
        }
        if (v < bv) { bv = v; bc = c; }
      }
      if (assign[p] != bc) { atomicOr(&changed, 1u); }
      assign[p] = bc;
      pd[p] = bv;
    }
  }
  workgroupBarrier();
  if (lid == 0u && atomicLoad(&changed) != 0u) { atomicOr(&ctl[4], 1u); }
  for (var s0 = 0u; s0 < KD; s0 += WG) {
    let s = s0 + lid;
    let cc = s / D;
    let t = s % D;
    var aw = 0.0;
    var ax = 0.0;
    for (var q = 0u; q < gp.ppt; q++) {
      workgroupBarrier();
      let p = first + q * WG + lid;
      sa[lid] = K;
      if (p < gp.N) {
        sa[lid] = assign[p]; // written above by this invocation
        for (var u = 0u; u < D; u++) { sx[lid * D + u] = px(p, u); sw[lid * D + u] = pw(p, u); }
      }
      workgroupBarrier();
      if (s < KD) {
        // Branch-free (adding 0 changes no sum): the slots of neighbouring invocations differ.
        for (var i = 0u; i < WG; i++) {
          let hit = sa[i] == cc;
          let wt = sw[i * D + t];
          aw += select(0.0, wt, hit);
          ax += select(0.0, wt * sx[i * D + t], hit);
        }
      }
    }
    if (s < KD) {
      partials[(wg.x * KD + s) * 2u] = aw;
      partials[(wg.x * KD + s) * 2u + 1u] = ax;
    }
  }
}
`;
}

/**
 * Σ over the chunks of each slot's partials (one workgroup of 64 per slot: the slots are few, the chunks a few
 * per invocation), unless converged.
 */
export function kmSumsWgsl(s: KMeansShape): string {
  return /* wgsl */ `
${common(s, ['ctl', 'partials', 'sums'])}
var<workgroup> wgU: u32;
var<workgroup> sx: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let lid = l.x;
  if (lid == 0u) { wgU = atomicLoad(&ctl[3]); }
  if (workgroupUniformLoad(&wgU) != 0u) { return; }
  let s = wg.x;
  var aw = 0.0;
  var ax = 0.0;
  for (var k = lid; k < gp.nc; k += 64u) {
    aw += partials[(k * KD + s) * 2u];
    ax += partials[(k * KD + s) * 2u + 1u];
  }
  sc[lid] = aw;
  sx[lid] = ax;
  for (var h = 32u; h > 0u; h >>= 1u) {
    workgroupBarrier();
    if (lid < h) { sc[lid] += sc[lid + h]; sx[lid] += sx[lid + h]; }
  }
  workgroupBarrier();
  if (lid == 0u) {
    sums[s * 2u] = sc[0];
    sums[s * 2u + 1u] = sx[0];
  }
}
`;
}

/**
 * The Lloyd step's end (one workgroup): converged (an iteration after the first changed nothing) → later
 * iterations are no-ops; else every centre with weight becomes its weighted mean, and each empty one, in
 * order, moves to the point with the largest distance (first on ties), whose distance then counts as 0.
 */
export function kmUpdateWgsl(s: KMeansShape): string {
  return /* wgsl */ `
${common(s, ['ctl', 'W', 'C', 'pd', 'sums'])}
var<workgroup> wgU: u32;
var<workgroup> empties: atomic<u32>;
var<workgroup> si: array<u32, 256>;

fn empty(c: u32) -> bool {
  for (var t = 0u; t < D; t++) { if (sums[(c * D + t) * 2u] > 0.0) { return false; } }
  return true;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u) {
  let lid = l.x;
  if (lid == 0u) {
    var skip = atomicLoad(&ctl[3]);
    if (skip == 0u) {
      let it = atomicLoad(&ctl[2]);
      atomicStore(&ctl[2], it + 1u);
      if (it > 0u && atomicLoad(&ctl[4]) == 0u) {
        atomicStore(&ctl[3], 1u);
        skip = 1u;
      }
      atomicStore(&ctl[4], 0u);
    }
    wgU = skip;
    atomicStore(&empties, 0u);
  }
  if (workgroupUniformLoad(&wgU) != 0u) { return; }
  for (var c = lid; c < K; c += 256u) {
    if (empty(c)) {
      atomicAdd(&empties, 1u);
    } else {
      for (var t = 0u; t < D; t++) {
        let sw = sums[(c * D + t) * 2u];
        if (sw > 0.0) { C[c * D + t] = sums[(c * D + t) * 2u + 1u] / sw; }
      }
    }
  }
  workgroupBarrier();
  if (lid == 0u) { wgU = atomicLoad(&empties); }
  if (workgroupUniformLoad(&wgU) == 0u) { return; }
  for (var c = 0u; c < K; c++) {
    if (lid == 0u) { wgU = select(0u, 1u, empty(c)); }
    if (workgroupUniformLoad(&wgU) == 0u) { continue; }
    var bv = -BIG;
    var bi = 0xffffffffu;
    for (var p = lid; p < gp.N; p += 256u) {
      if (pd[p] > bv) { bv = pd[p]; bi = p; }
    }
    sc[lid] = bv;
    si[lid] = bi;
    for (var h = 128u; h > 0u; h >>= 1u) {
      workgroupBarrier();
      if (lid < h) {
        let v = sc[lid + h];
        let i = si[lid + h];
        if (v > sc[lid] || (v == sc[lid] && i < si[lid])) { sc[lid] = v; si[lid] = i; }
      }
    }
    workgroupBarrier();
    let worst = si[0];
    if (lid < D) { C[c * D + lid] = px(worst, lid); }
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) { pd[worst] = 0.0; }
    storageBarrier();
    workgroupBarrier();
  }
}
`;
}

/** The group's codebook: the centres rounded to FP16 (f32 values), at codebooks[gi·KD …]; ctl reset for the next group. */
export function kmRoundWgsl(s: KMeansShape): string {
  return /* wgsl */ `
${common(s, ['ctl', 'C', 'codebooks'])}
${F16_ROUND_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u) {
  let lid = l.x;
  for (var s = lid; s < KD; s += 256u) { codebooks[gp.gi * KD + s] = f16_round(C[s]); }
  if (lid < 5u) { atomicStore(&ctl[lid], 0u); }
}
`;
}

/**
 * float32 → the nearest binary16 value (ties to even; overflow → ±inf; NaN stays NaN) as float32: io/dtypes.ts
 * f32BitsToF16Bits then f16BitsToF32Bits, bit for bit (WGSL's own f32→f16 conversion may round either way).
 */
export const F16_ROUND_WGSL = /* wgsl */ `
fn shift_rne(m: u32, s: u32) -> u32 {
  let r = m >> s;
  let rem = m & ((1u << s) - 1u);
  let half = 1u << (s - 1u);
  if (rem > half || (rem == half && (r & 1u) == 1u)) { return r + 1u; }
  return r;
}
fn f16_bits(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  let sign = (b >> 16u) & 0x8000u;
  let ex = (b >> 23u) & 0xffu;
  let mant = b & 0x7fffffu;
  if (ex == 0xffu) {
    if (mant == 0u) { return sign | 0x7c00u; }
    return sign | 0x7c00u | select(0x200u, mant >> 13u, (mant >> 13u) != 0u);
  }
  let e = i32(ex) - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    return sign | shift_rne(mant | 0x800000u, u32(14 - e));
  }
  return sign | shift_rne((u32(e) << 23u) | mant, 13u);
}
fn f16_value(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e != 0u) {
    if (e == 31u) { return bitcast<f32>(sign | 0x7f800000u | (m << 13u)); }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
  }
  // Subnormal (or zero): m·2⁻²⁴, exact in float32.
  return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
}
fn f16_round(x: f32) -> f32 { return f16_value(f16_bits(x)); }
`;

/** The per-group uniform words. */
export function kmeansWords(g: { rows: number; cols: number; j: number; perRow: number; N: number; ppt: number; nc: number; gi: number }): number[] {
  return [g.rows, g.cols, g.j, g.perRow, g.N, g.ppt, g.nc, g.gi];
}
