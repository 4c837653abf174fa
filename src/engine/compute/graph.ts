// Ergonomic ONNX graph builder over ./onnx/proto.ts.
//
//   const g = new GraphBuilder('mm');
//   const x = g.input('x', 'float32', ['N', 256]);
//   const w = g.initializer('w', wVals, [256, 256]);
//   const y = g.op('MatMul', [x, w]);
//   g.output(y, 'y');
//   const bytes = g.toModel();
//
// Every value gets a unique name (user names are kept when free, otherwise suffixed). Element types
// are propagated for the ops we use so graph outputs carry a type without hand annotation.

import { encodeModel, type AttributeSpec, type Dim, type NodeProtoSpec, type OnnxDtype, type TensorProtoSpec, type ValueInfoSpec } from './onnx/proto';

export type { Dim, OnnxDtype } from './onnx/proto';

/** A value (graph input, initializer or node output) inside one GraphBuilder. */
export interface Value {
  readonly name: string;
  readonly dtype: OnnxDtype | undefined;
  readonly shape?: readonly Dim[];
}

export type TypedArrayData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Uint16Array;

/** Explicitly typed attribute values (for when the JS number alone is ambiguous). */
export const attr = {
  float: (f: number) => ({ kind: 'float' as const, f }),
  floats: (fs: readonly number[]) => ({ kind: 'floats' as const, fs }),
  int: (i: number) => ({ kind: 'int' as const, i }),
  ints: (is: readonly number[]) => ({ kind: 'ints' as const, is }),
  tensor: (data: TypedArrayData, dims: readonly number[], dtype?: OnnxDtype) => ({ kind: 'tensor' as const, data, dims, dtype }),
};
type Tagged = ReturnType<(typeof attr)[keyof typeof attr]>;
export type AttrValue = number | bigint | string | readonly number[] | readonly string[] | Tagged;

/** Attribute names that ONNX defines as FLOAT: a bare integral number there still means float. */
const FLOAT_ATTRS = new Set(['alpha', 'beta', 'epsilon', 'gamma', 'lambd', 'bias', 'ratio', 'momentum', 'value_float', 'spatial_scale', 'scale']);
const FLOATS_ATTRS = new Set(['value_floats', 'scales']);

export interface OpOptions {
  /** Number of outputs (default 1). */
  outputs?: number;
  /** Names for the outputs (uniquified). */
  names?: readonly string[];
  domain?: string;
  /** Element type of the outputs when propagation can't know it. */
  dtype?: OnnxDtype;
  /** Per-output element types (multi-output ops whose outputs differ, beyond TopK's int64 indices). */
  dtypes?: readonly (OnnxDtype | undefined)[];
}

function dtypeOf(data: TypedArrayData): OnnxDtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int8Array) return 'int8';
  return 'float16'; // Uint16Array carries fp16 bits
}

function tensorSpec(name: string | undefined, data: TypedArrayData, dims: readonly number[], dtype?: OnnxDtype): TensorProtoSpec {
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new Error(`tensor ${name ?? '(attr)'}: ${data.length} elements for dims [${dims}]`);
  return { name, dtype: dtype ?? dtypeOf(data), dims, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Output element type of an op given its input types (undefined = unknown, pass opts.dtype). */
function inferDtype(opType: string, inputs: readonly (Value | null)[], attrs: Record<string, AttrValue>): OnnxDtype | undefined {
  switch (opType) {
    case 'Shape':
    case 'Size':
    case 'ArgMax':
    case 'ArgMin':
    case 'NonZero':
      return 'int64';
    case 'Equal':
    case 'Less':
    case 'Greater':
    case 'LessOrEqual':
    case 'GreaterOrEqual':
    case 'Not':
    case 'And':
    case 'Or':
    case 'IsNaN':
    case 'IsInf':
      return 'bool';
    case 'Cast': {
      const to = attrs.to;
      const num = typeof to === 'number' ? to : undefined;
      const names: Record<number, OnnxDtype> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64' };
      return num !== undefined ? names[num] : undefined;
    }
    case 'Where':
      return inputs[1]?.dtype;
    case 'Constant': {
      const v = attrs.value;
      if (v !== undefined && typeof v === 'object' && 'kind' in v && v.kind === 'tensor') return v.dtype ?? dtypeOf(v.data);
      return attrs.value_int !== undefined || attrs.value_ints !== undefined ? 'int64' : 'float32';
    }
    case 'QuantizeLinear':
      return inputs[2]?.dtype ?? 'uint8';
    case 'DequantizeLinear':
    case 'MatMulNBits':
      return inputs[1]?.dtype ?? 'float32';
    default:
      return inputs.find((v) => v !== null)?.dtype;
  }
}

export class GraphBuilder {
  private readonly nodes: NodeProtoSpec[] = [];
  private readonly inits: TensorProtoSpec[] = [];
  private readonly inputs: ValueInfoSpec[] = [];
  private readonly outputs: ValueInfoSpec[] = [];
  private readonly used = new Set<string>();
  private readonly counters = new Map<string, number>();
  private readonly domains = new Map<string, number>();

  /** `opset` for the default domain; com.microsoft is added (version 1) when an op uses it. */
  constructor(
    readonly name = 'graph',
    readonly opset = 17,
  ) {}

  /** A free name: `base` itself when unused, else `base_1`, `base_2`, ... */
  uniqueName(base: string): string {
    if (!this.used.has(base)) {
      this.used.add(base);
      return base;
    }
    let k = this.counters.get(base) ?? 0;
    let name: string;
    do name = `${base}_${++k}`;
    while (this.used.has(name));
    this.counters.set(base, k);
    this.used.add(name);
    return name;
  }

  input(name: string, dtype: OnnxDtype, shape: readonly Dim[]): Value {
    if (this.used.has(name)) throw new Error(`graph ${this.name}: input name '${name}' is already used`);
    this.used.add(name);
    this.inputs.push({ name, dtype, shape });
    return { name, dtype, shape };
  }

  /** A constant tensor stored in the model (raw_data; the bytes are referenced until toModel()). */
  initializer(name: string, data: TypedArrayData, dims: readonly number[], dtype?: OnnxDtype): Value {
    const unique = this.uniqueName(name);
    const spec = tensorSpec(unique, data, dims, dtype);
    this.inits.push(spec);
    return { name: unique, dtype: spec.dtype, shape: dims };
  }

  /** Small constants (shapes, axes, scalars). A scalar is dims [] unless `dims` is given. */
  constI64(values: readonly number[] | number, dims?: readonly number[]): Value {
    const arr = BigInt64Array.from((typeof values === 'number' ? [values] : values).map((v) => BigInt(v)));
    return this.initializer('c_i64', arr, dims ?? (typeof values === 'number' ? [] : [arr.length]));
  }

  constF32(values: readonly number[] | number, dims?: readonly number[]): Value {
    const arr = Float32Array.from(typeof values === 'number' ? [values] : values);
    return this.initializer('c_f32', arr, dims ?? (typeof values === 'number' ? [] : [arr.length]));
  }

  /** One node with a single output. `null` inputs are omitted optional inputs. */
  op(opType: string, inputs: readonly (Value | null)[], attrs: Record<string, AttrValue> = {}, opts: OpOptions = {}): Value {
    return this.opMulti(opType, inputs, attrs, { ...opts, outputs: 1 })[0];
  }

  /** One node with `opts.outputs` outputs (TopK, Split, ...). */
  opMulti(opType: string, inputs: readonly (Value | null)[], attrs: Record<string, AttrValue> = {}, opts: OpOptions = {}): Value[] {
    const n = opts.outputs ?? 1;
    const dtype = opts.dtype ?? inferDtype(opType, inputs, attrs);
    const outs: Value[] = [];
    for (let i = 0; i < n; i++) {
      const t = opts.dtypes?.[i] ?? (opType === 'TopK' && i === 1 ? 'int64' : dtype);
      outs.push({ name: this.uniqueName(opts.names?.[i] ?? `${opType}_out`), dtype: t });
    }
    const domain = opts.domain ?? '';
    if (domain && !this.domains.has(domain)) this.domains.set(domain, 1);
    this.nodes.push({
      opType,
      domain,
      name: this.uniqueName(`${opType}_node`),
      inputs: inputs.map((v) => (v === null ? '' : v.name)),
      outputs: outs.map((v) => v.name),
      attributes: Object.entries(attrs).map(([k, v]) => toAttribute(k, v)),
    });
    return outs;
  }

  /**
   * Mark `v` as a graph output named `name` (an Identity node renames it when needed).
   * `shape` defaults to unknown; `dtype` to the propagated type.
   */
  output(v: Value, name?: string, shape?: readonly Dim[], dtype?: OnnxDtype): Value {
    let out = v;
    if (name !== undefined && name !== v.name) {
      if (this.used.has(name)) throw new Error(`graph ${this.name}: output name '${name}' is already used`);
      this.used.add(name);
      this.nodes.push({ opType: 'Identity', inputs: [v.name], outputs: [name], name: this.uniqueName('Identity_node') });
      out = { name, dtype: v.dtype, shape: v.shape };
    }
    const t = dtype ?? out.dtype;
    if (!t) throw new Error(`graph ${this.name}: output '${out.name}' has no known element type; pass dtype`);
    this.outputs.push({ name: out.name, dtype: t, shape });
    return out;
  }

  /** Opset of a non-default domain (e.g. 'com.microsoft'). */
  useDomain(domain: string, version: number): void {
    this.domains.set(domain, version);
  }

  /**
   * The model, keeping only the nodes and initializers the outputs depend on. ORT runs every node
   * of a graph whether or not a fetched output needs it, so a graph built by a shared emitter and
   * cut short by its outputs (a block graph that only returns one Hessian) must be pruned here.
   * Graph inputs no live node reads are dropped too: ORT places an input no kernel consumes on the
   * CPU, so a device tensor fed to it is copied back to the host on every run (a 7B block's unused weights
   * are hundreds of MB per statistics pass).
   * ComputeRuntime.run feeds a session only the inputs it declares, so callers may still pass all.
   */
  toModel(): Uint8Array {
    return this.encode((inits) => inits);
  }

  /**
   * The model with every initializer of at least `minBytes` stored in a data file `location` beside it (ONNX external
   * data; what a model past protobuf's 2 GiB needs): the model bytes and the data file's pieces in order, each at its
   * offset (64-byte aligned, zeros between), still referencing the initializers' arrays.
   */
  toModelWithExternalData(location: string, minBytes = 1024): { model: Uint8Array; pieces: { offset: number; bytes: Uint8Array }[]; dataBytes: number } {
    const pieces: { offset: number; bytes: Uint8Array }[] = [];
    let offset = 0;
    const model = this.encode((inits) =>
      inits.map((t) => {
        if (t.rawData.byteLength < minBytes) return t;
        offset = Math.ceil(offset / 64) * 64;
        pieces.push({ offset, bytes: t.rawData });
        const spec = { ...t, external: { location, offset } };
        offset += t.rawData.byteLength;
        return spec;
      }),
    );
    return { model, pieces, dataBytes: offset };
  }

  /** The live graph (see toModel) encoded, its initializers as `place` stores them. */
  private encode(place: (inits: TensorProtoSpec[]) => TensorProtoSpec[]): Uint8Array {
    if (this.outputs.length === 0) throw new Error(`graph ${this.name}: no outputs`);
    const { nodes, inits, needed } = this.live();
    return encodeModel({
      irVersion: 8,
      opsets: [{ domain: '', version: this.opset }, ...[...this.domains].map(([domain, version]) => ({ domain, version }))],
      graph: { name: this.name, nodes, initializers: place(inits), inputs: this.inputs.filter((i) => needed.has(i.name)), outputs: this.outputs },
    });
  }

  /** Nodes (in emission order, which is topological), initializers and value names reachable from the outputs. */
  private live(): { nodes: NodeProtoSpec[]; inits: TensorProtoSpec[]; needed: Set<string> } {
    const needed = new Set(this.outputs.map((o) => o.name));
    const keep: boolean[] = new Array(this.nodes.length).fill(false);
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i];
      if (!n.outputs.some((o) => needed.has(o))) continue;
      keep[i] = true;
      for (const v of n.inputs) if (v) needed.add(v);
    }
    return { nodes: this.nodes.filter((_, i) => keep[i]), inits: this.inits.filter((t) => t.name !== undefined && needed.has(t.name)), needed };
  }
}

function toAttribute(name: string, v: AttrValue): AttributeSpec {
  if (typeof v === 'string') return { name, type: 'string', s: v };
  if (typeof v === 'bigint') return { name, type: 'int', i: v };
  if (typeof v === 'number') {
    if (FLOAT_ATTRS.has(name) || !Number.isInteger(v)) return { name, type: 'float', f: v };
    return { name, type: 'int', i: v };
  }
  if (Array.isArray(v)) {
    if (v.length > 0 && typeof v[0] === 'string') return { name, type: 'strings', strings: v as string[] };
    const nums = v as number[];
    if (FLOATS_ATTRS.has(name) || nums.some((x) => !Number.isInteger(x))) return { name, type: 'floats', floats: nums };
    return { name, type: 'ints', ints: nums };
  }
  const t = v as Tagged;
  switch (t.kind) {
    case 'float':
      return { name, type: 'float', f: t.f };
    case 'floats':
      return { name, type: 'floats', floats: t.fs };
    case 'int':
      return { name, type: 'int', i: t.i };
    case 'ints':
      return { name, type: 'ints', ints: t.is };
    case 'tensor':
      return { name, type: 'tensor', t: tensorSpec(undefined, t.data, t.dims, t.dtype) };
  }
}
