// Rotary position embedding tables from a ModelConfig, per transformers' ROPE_INIT_FUNCTIONS
// (default, linear, llama3, dynamic within the original context).

import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { ModelConfig } from './config';

/**
 * Rotary inverse frequencies (length headDim/2) for windows of `seqLen` tokens, per transformers'
 * ROPE_INIT_FUNCTIONS. Attention scaling is 1 for every supported type.
 */
export function ropeInvFreq(cfg: ModelConfig, seqLen: number): Float64Array {
  const half = cfg.headDim / 2;
  const inv = new Float64Array(half);
  // transformers computes base ** (arange(0, dim, 2) / dim) in float32 then inverts; we keep float64,
  // which differs by < 1 ulp of float32 — well below the 0.2 % perplexity tolerance.
  for (let i = 0; i < half; i++) inv[i] = 1 / cfg.ropeTheta ** ((2 * i) / cfg.headDim);
  const s = cfg.ropeScaling;
  switch (s.type) {
    case 'default':
      return inv;
    case 'linear':
      for (let i = 0; i < half; i++) inv[i] /= s.factor;
      return inv;
    case 'dynamic':
      if (seqLen > s.originalMaxPositions)
        throw new ProtocolError(
          ErrorCode.BadConfig,
          `${cfg.source}: dynamic rope scaling beyond ${s.originalMaxPositions} positions (window ${seqLen}) is not supported`,
          `${cfg.source}#rope_scaling`,
          'use a window within the original context',
        );
      return inv;
    case 'llama3': {
      const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositions / s.highFreqFactor;
      for (let i = 0; i < half; i++) {
        const wavelen = (2 * Math.PI) / inv[i];
        if (wavelen > lowWavelen) inv[i] = inv[i] / s.factor;
        else if (wavelen >= highWavelen) {
          const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
          inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
        }
      }
      return inv;
    }
  }
}

/** cos/sin tables [seqLen, headDim/2] (row-major) for positions 0..seqLen-1. */
export function ropeTables(cfg: ModelConfig, seqLen: number): { cos: Float32Array; sin: Float32Array } {
  const inv = ropeInvFreq(cfg, seqLen);
  const half = inv.length;
  const cos = new Float32Array(seqLen * half),
    sin = new Float32Array(seqLen * half);
  for (let p = 0; p < seqLen; p++)
    for (let i = 0; i < half; i++) {
      // float32 product as in transformers (inv_freq float32 @ position float32), then cos/sin.
      const a = Math.fround(Math.fround(inv[i]) * p);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  return { cos, sin };
}
