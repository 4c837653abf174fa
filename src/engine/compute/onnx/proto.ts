// A minimal hand-written protobuf *encoder* for the subset of onnx.proto we generate.
// We never parse ONNX, only emit it, so a writer of varints / fixed32 / length-delimited fields is enough.
// Field numbers follow onnx/onnx.proto (IR version 8+). Large payloads (raw_data of initializers) are
// kept as views and concatenated once in `finish()`, so a 64 MB weight is copied exactly once.

/** TensorProto.DataType values (onnx.proto). */
export const OnnxDataType = {
  float32: 1,
  uint8: 2,
  int8: 3,
  uint16: 4,
  int16: 5,
  int32: 6,
  int64: 7,
  string: 8,
  bool: 9,
  float16: 10,
  float64: 11,
  uint32: 12,
  uint64: 13,
  bfloat16: 16,
} as const;
export type OnnxDtype = keyof typeof OnnxDataType;

/** AttributeProto.AttributeType values. */
export const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8 } as const;

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;
const textEncoder = new TextEncoder();

/**
 * Append-only protobuf writer. Small scalars accumulate in a number[] that is flushed into a chunk
 * whenever a large byte payload is appended (payloads are referenced, not copied).
 */
export class PbWriter {
  private chunks: Uint8Array[] = [];
  private pending: number[] = [];
  private chunkBytes = 0;

  get length(): number {
    return this.chunkBytes + this.pending.length;
  }

  private rawVarint(v: number | bigint): void {
    if (typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      if (!Number.isInteger(v)) throw new Error(`protobuf varint must be an integer, got ${v}`);
      while (v >= 128) {
        this.pending.push((v % 128) | 128);
        v = Math.floor(v / 128);
      }
      this.pending.push(v);
      return;
    }
    // Negative int64 (e.g. axis = -1) is encoded as its 64-bit two's complement: 10 bytes.
    let b = BigInt.asUintN(64, BigInt(v));
    while (b >= 128n) {
      this.pending.push(Number(b & 127n) | 128);
      b >>= 7n;
    }
    this.pending.push(Number(b));
  }

  private tag(field: number, wire: number): void {
    this.rawVarint(field * 8 + wire);
  }

  varint(field: number, v: number | bigint): this {
    this.tag(field, WIRE_VARINT);
    this.rawVarint(v);
    return this;
  }

  float(field: number, v: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.pending.push(b[0], b[1], b[2], b[3]);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.rawVarint(data.byteLength);
    if (data.byteLength < 256) {
      for (let i = 0; i < data.byteLength; i++) this.pending.push(data[i]);
    } else {
      this.flush();
      this.chunks.push(data);
      this.chunkBytes += data.byteLength;
    }
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, textEncoder.encode(s));
  }

  /** Embedded message: tag, length, then the sub-writer's chunks (not copied). */
  message(field: number, sub: PbWriter): this {
    sub.flush();
    this.tag(field, WIRE_LEN);
    this.rawVarint(sub.length);
    this.flush();
    for (const c of sub.chunks) this.chunks.push(c);
    this.chunkBytes += sub.chunkBytes;
    return this;
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.chunks.push(Uint8Array.from(this.pending));
    this.chunkBytes += this.pending.length;
    this.pending = [];
  }

  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.chunkBytes);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.byteLength;
    }
    return out;
  }
}

// ── onnx.proto messages ───────────────────────────────────────────────────────────────────────

export interface TensorProtoSpec {
  name?: string;
  dtype: OnnxDtype;
  dims: readonly number[];
  /** Little-endian element bytes (ORT reads raw_data for every numeric type). */
  rawData: Uint8Array;
  /** Stored in a file beside the model instead (ONNX external data): rawData's bytes at `offset` of `location`. */
  external?: { location: string; offset: number };
}

export function encodeTensor(t: TensorProtoSpec): PbWriter {
  const w = new PbWriter();
  for (const d of t.dims) w.varint(1, d); // dims
  w.varint(2, OnnxDataType[t.dtype]); // data_type
  if (t.name !== undefined) w.string(8, t.name); // name
  if (!t.external) return w.bytes(9, t.rawData); // raw_data
  const entry = (key: string, value: string) => new PbWriter().string(1, key).string(2, value);
  w.message(13, entry('location', t.external.location)); // external_data
  w.message(13, entry('offset', String(t.external.offset)));
  w.message(13, entry('length', String(t.rawData.byteLength)));
  w.varint(14, 1); // data_location = EXTERNAL
  return w;
}

/** A dimension: a number is fixed (dim_value), a string is symbolic (dim_param). */
export type Dim = number | string;

export interface ValueInfoSpec {
  name: string;
  dtype: OnnxDtype;
  /** Undefined = unknown rank (no shape field). */
  shape?: readonly Dim[];
}

export function encodeValueInfo(v: ValueInfoSpec): PbWriter {
  const tensorType = new PbWriter().varint(1, OnnxDataType[v.dtype]); // elem_type
  if (v.shape) {
    const shape = new PbWriter();
    for (const d of v.shape) {
      const dim = new PbWriter();
      if (typeof d === 'number')
        dim.varint(1, d); // dim_value
      else dim.string(2, d); // dim_param
      shape.message(1, dim);
    }
    tensorType.message(2, shape);
  }
  const type = new PbWriter().message(1, tensorType); // TypeProto.tensor_type
  return new PbWriter().string(1, v.name).message(2, type);
}

export type AttributeSpec =
  | { name: string; type: 'int'; i: number | bigint }
  | { name: string; type: 'float'; f: number }
  | { name: string; type: 'string'; s: string }
  | { name: string; type: 'ints'; ints: readonly (number | bigint)[] }
  | { name: string; type: 'floats'; floats: readonly number[] }
  | { name: string; type: 'strings'; strings: readonly string[] }
  | { name: string; type: 'tensor'; t: TensorProtoSpec }
  | { name: string; type: 'graph'; g: GraphProtoSpec };

export function encodeAttribute(a: AttributeSpec): PbWriter {
  const w = new PbWriter().string(1, a.name);
  switch (a.type) {
    case 'float':
      w.float(2, a.f).varint(20, AttrType.FLOAT);
      break;
    case 'int':
      w.varint(3, a.i).varint(20, AttrType.INT);
      break;
    case 'string':
      w.string(4, a.s).varint(20, AttrType.STRING);
      break;
    case 'tensor':
      w.message(5, encodeTensor(a.t)).varint(20, AttrType.TENSOR);
      break;
    case 'graph':
      w.message(6, encodeGraph(a.g)).varint(20, AttrType.GRAPH);
      break;
    case 'floats':
      for (const f of a.floats) w.float(7, f);
      w.varint(20, AttrType.FLOATS);
      break;
    case 'ints':
      for (const i of a.ints) w.varint(8, i);
      w.varint(20, AttrType.INTS);
      break;
    case 'strings':
      for (const s of a.strings) w.string(9, s);
      w.varint(20, AttrType.STRINGS);
      break;
  }
  return w;
}

export interface NodeProtoSpec {
  opType: string;
  /** '' marks an omitted optional input. */
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  domain?: string;
  attributes?: readonly AttributeSpec[];
}

export function encodeNode(n: NodeProtoSpec): PbWriter {
  const w = new PbWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attributes ?? []) w.message(5, encodeAttribute(a));
  if (n.domain) w.string(7, n.domain);
  return w;
}

export interface GraphProtoSpec {
  name: string;
  nodes: readonly NodeProtoSpec[];
  initializers: readonly TensorProtoSpec[];
  inputs: readonly ValueInfoSpec[];
  outputs: readonly ValueInfoSpec[];
  valueInfo?: readonly ValueInfoSpec[];
}

export function encodeGraph(g: GraphProtoSpec): PbWriter {
  const w = new PbWriter();
  for (const n of g.nodes) w.message(1, encodeNode(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, encodeTensor(t));
  for (const v of g.inputs) w.message(11, encodeValueInfo(v));
  for (const v of g.outputs) w.message(12, encodeValueInfo(v));
  for (const v of g.valueInfo ?? []) w.message(13, encodeValueInfo(v));
  return w;
}

export interface OpsetSpec {
  /** '' is the default ai.onnx domain. */
  domain: string;
  version: number;
}

export interface ModelProtoSpec {
  irVersion: number;
  opsets: readonly OpsetSpec[];
  graph: GraphProtoSpec;
  producerName?: string;
  producerVersion?: string;
}

export function encodeModel(m: ModelProtoSpec): Uint8Array {
  const w = new PbWriter().varint(1, m.irVersion);
  w.string(2, m.producerName ?? 'lopro');
  if (m.producerVersion) w.string(3, m.producerVersion);
  w.message(7, encodeGraph(m.graph));
  for (const o of m.opsets) {
    const os = new PbWriter();
    if (o.domain) os.string(1, o.domain);
    os.varint(2, o.version);
    w.message(8, os);
  }
  return w.finish();
}
