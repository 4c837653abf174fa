// Calibration and evaluation windows, exactly per ../shared/protocol.md:
// - calibration: n windows of ctx tokens; window i starts at floor(i·(T − ctx)/n);
// - evaluation: non-overlapping windows w = 0 … floor(T/ctx) − 1 starting at w·ctx.

import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';

/** Most calibration tokens (windows × ctx) a run accepts: 2^27, 512× the paper's 128 × 2048. */
export const MAX_CALIB_TOKENS = 2 ** 27;

/** Start offsets of the protocol's calibration windows. */
export function calibrationStarts(tokenCount: number, ctx: number, n: number): number[] {
  if (!(Number.isInteger(ctx) && ctx > 1)) throw new ProtocolError(ErrorCode.BadCalibration, `window length ctx must be an integer > 1, got ${ctx}`, 'ctx');
  if (!(Number.isInteger(n) && n > 0)) throw new ProtocolError(ErrorCode.BadCalibration, `calibration window count must be a positive integer, got ${n}`, 'calibSamples');
  // n·ctx ids are gathered into one Int32Array and n·ctx·hidden activations stored per block:
  // refuse absurd products here (1e9 windows crashed V8 with an invalid-size fatal error).
  if (n * ctx > MAX_CALIB_TOKENS)
    throw new ProtocolError(
      ErrorCode.BadCalibration,
      `${n} calibration windows × ${ctx} tokens = ${n * ctx} tokens exceeds the supported ${MAX_CALIB_TOKENS}`,
      'calibSamples',
      'the protocol uses 128 windows; lower calibSamples or ctx',
    );
  if (tokenCount < ctx)
    throw new ProtocolError(
      ErrorCode.BadCalibration,
      `calibration text has ${tokenCount} tokens, fewer than one window of ${ctx}`,
      'calibText',
      'use a longer calibration text or a smaller ctx',
    );
  const starts: number[] = [];
  // Integer arithmetic (exact for T·n < 2^53): floor(i·(T − ctx)/n).
  for (let i = 0; i < n; i++) starts.push(Math.floor((i * (tokenCount - ctx)) / n));
  return starts;
}

/** The calibration windows as one [n, ctx] row-major id array. */
export function calibrationWindows(ids: Int32Array, ctx: number, n: number): Int32Array {
  const starts = calibrationStarts(ids.length, ctx, n);
  const out = new Int32Array(n * ctx);
  starts.forEach((s, i) => out.set(ids.subarray(s, s + ctx), i * ctx));
  return out;
}

/** Number of evaluation windows: floor(T/ctx) (a trailing partial window is dropped). */
export function evalWindowCount(tokenCount: number, ctx: number): number {
  return Math.floor(tokenCount / ctx);
}

/** Evaluation windows [count, ctx]: non-overlapping, from token 0. */
export function evalWindows(ids: Int32Array, ctx: number): Int32Array {
  const n = evalWindowCount(ids.length, ctx);
  if (n === 0) throw new ProtocolError(ErrorCode.BadCalibration, `evaluation text has ${ids.length} tokens, fewer than one window of ${ctx}`, 'text');
  return ids.slice(0, n * ctx);
}

/** The protocol ctx of a model when the run config says 0: max_position_embeddings capped at 512. */
export function protocolCtx(maxPositions: number, requested = 0): number {
  return requested > 0 ? requested : Math.min(maxPositions, 512);
}
