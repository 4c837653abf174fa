// TEMPORARY (replaced by the gpu-kernels branch): group params and RTN codes on the device.
import type { DawnGpu } from './dawn';
import type { GroupParams, ParamsSpec } from '../backend';
export async function groupParamsOnDawn(_g: DawnGpu, _W: GPUBuffer, _r: number, _c: number, _gs: number, _s: ParamsSpec): Promise<Float32Array> { throw new Error('TEMP'); }
export async function rtnCodesOnDawn(_g: DawnGpu, _W: GPUBuffer, _r: number, _c: number, _gs: number, _p: GroupParams, _m: number): Promise<Uint32Array> { throw new Error('TEMP'); }
