// `--target-size 7.5GB`: the size a user asks for, as the bits per weight of the quantized linears that give it.
// Everything that is not a quantized linear (embedding, head, norms) is counted at its stored width, as the panel's
// size estimate counts it (webview/estimate.ts).

import type { ModelSummary } from '../../protocol/messages';
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';

const UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40 };

/** "7.5GB", "800 MiB", "123456" (bytes) → bytes; throws a flag error naming what was given. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$/i.exec(text);
  const unit = m ? UNITS[(m[2] ?? 'B').toUpperCase()] : undefined;
  if (!m || unit === undefined || !(Number(m[1]) > 0))
    throw new ProtocolError(ErrorCode.InvalidParams, `--target-size must be a size such as 7.5GB or 800MiB, got "${text}"`, '--target-size');
  return Number(m[1]) * unit;
}

/** The bits per weight of the quantized linears that make the whole output `bytes` large. */
export function bpwForSize(s: ModelSummary, bytes: number): number {
  const weights = s.linears.reduce((a, l) => a + l.rows * l.cols, 0);
  const rest = Math.max(0, s.params - weights) * (s.params ? s.totalBytes / s.params : 2);
  const bpw = weights > 0 ? ((bytes - rest) * 8) / weights : 0;
  if (!(bpw > 0))
    throw new ProtocolError(
      ErrorCode.BadConfig,
      `--target-size ${(bytes / 1e9).toFixed(3)} GB is less than what ${s.path} keeps unquantized (${(rest / 1e9).toFixed(3)} GB of embedding, head and norms)`,
      '--target-size',
      'ask for a larger size',
    );
  return Math.floor(bpw * 1e4) / 1e4; // rounded down: the output never exceeds the size asked for
}
