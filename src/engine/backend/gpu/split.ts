// Matrices wider than one WebGPU binding. A buffer may be far larger than what one storage binding may
// cover (maxStorageBufferBindingSize, at most 2 GiB − 4 bytes), and a 70B down_proj's Hessian (28672² float32)
// is larger than that. Such a matrix is one buffer bound as a few
// row parts: the kernels that touch a whole n×n matrix read and write it through ld_X / st_X, which pick
// the part (parts are bound read_write side by side, never overlapping, which WebGPU allows); the loops
// that walk rows (GPTQ's, GPTVQ's) bind a window of rows instead.

/** Extra parts of the matrix at binding b take bindings PART_BINDING_BASE + 10·b + p (p = 1 … 9). */
const PART_BINDING_BASE = 100;

/** Most parts a split matrix may have (bindings per shader stage are few). */
export const MAX_PARTS = 4;

/** Storage offsets must be multiples of this (WebGPU's minStorageBufferOffsetAlignment, at most 256). */
const ALIGN_BYTES = 256;

/**
 * Element offsets where the parts of a rows×cols float32 matrix start (first 0), each part a whole number
 * of rows, at most `maxBindingBytes`, starting on a 256-byte boundary; [0] when it fits one binding.
 */
export function rowParts(rows: number, cols: number, maxBindingBytes: number): number[] {
  if (4 * rows * cols <= maxBindingBytes) return [0];
  // Rows per part: a multiple of the rows that make 256 bytes whole (64 rows always do).
  const unit = ALIGN_BYTES / gcd(4 * cols, ALIGN_BYTES);
  const per = Math.floor(maxBindingBytes / (4 * cols) / unit) * unit;
  if (per === 0) return [];
  const starts: number[] = [];
  for (let r = 0; r < rows; r += per) starts.push(r * cols);
  return starts;
}

/** An n×n float32 matrix binds in at most MAX_PARTS parts, its flat index below 2³² (the kernels' u32). */
export function squareBinds(n: number, maxBindingBytes: number): boolean {
  const parts = rowParts(n, n, maxBindingBytes).length;
  return parts > 0 && parts <= MAX_PARTS && n * n < 2 ** 32;
}

/** The widest n for which squareBinds holds. */
export function maxSquareCols(maxBindingBytes: number): number {
  let n = Math.min(65535, Math.floor(Math.sqrt((MAX_PARTS * maxBindingBytes) / 4)));
  while (n > 0 && !squareBinds(n, maxBindingBytes)) n--;
  return n;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** The binding number of part p of the matrix declared at binding b. */
export const partBinding = (b: number, p: number): number => (p === 0 ? b : PART_BINDING_BASE + 10 * b + p);

/**
 * WGSL for a matrix `name` at binding `b` in parts starting at `starts` (elements): the declarations and
 * ld_<name>(i) (and st_<name>(i, v) when writable) over the flat row-major index i.
 */
export function splitVar(name: string, b: number, starts: readonly number[], access: 'read' | 'read_write', type: 'f32' | 'u32' = 'f32'): string {
  const decl = starts.map((_, p) => `@group(0) @binding(${partBinding(b, p)}) var<storage, ${access}> ${name}_${p}: array<${type}>;`).join('\n');
  const later = starts
    .map((s, p) => ({ s, p }))
    .slice(1)
    .reverse();
  const ld = [...later.map(({ s, p }) => `if (i >= ${s}u) { return ${name}_${p}[i - ${s}u]; }`), `return ${name}_0[i];`];
  const st = [...later.map(({ s, p }) => `if (i >= ${s}u) { ${name}_${p}[i - ${s}u] = v; return; }`), `${name}_0[i] = v;`];
  const fns = [`fn ld_${name}(i: u32) -> ${type} { ${ld.join(' ')} }`];
  if (access === 'read_write') fns.push(`fn st_${name}(i: u32, v: ${type}) { ${st.join(' ')} }`);
  return `${decl}\n${fns.join('\n')}`;
}

/** The bind-group entries of a matrix at binding b (buffer `buf`, `elems` float32 values) in parts `starts`. */
export function splitEntries(b: number, buf: GPUBuffer, starts: readonly number[], elems: number): GPUBindGroupEntry[] {
  if (starts.length === 1) return [{ binding: b, resource: { buffer: buf } }];
  return starts.map((s, p) => ({ binding: partBinding(b, p), resource: { buffer: buf, offset: 4 * s, size: 4 * ((starts[p + 1] ?? elems) - s) } }));
}

/**
 * A binding of rows [r0, r1) of a cols-wide float32 matrix in `buf`: it starts at the 256-byte boundary at or
 * before row r0, so the rows begin `skip` elements into it.
 */
export function rowWindow(buf: GPUBuffer, cols: number, r0: number, r1: number): { binding: GPUBufferBinding; skip: number } {
  const first = Math.floor((4 * r0 * cols) / ALIGN_BYTES) * ALIGN_BYTES;
  return { binding: { buffer: buf, offset: first, size: 4 * r1 * cols - first }, skip: r0 * cols - first / 4 };
}
