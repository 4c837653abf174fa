// Bridge to run/export_onnx.ts (owned by the model engineer): loaded lazily so the rest of the
// engine works while that module is absent.
import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';
import type { RunHooks } from './pipeline';

export async function exportOnnx(nativeDir: string, outDir: string, hooks: RunHooks): Promise<void> {
  void nativeDir; void outDir; void hooks;
  throw new ProtocolError(ErrorCode.InvalidParams, 'the ONNX export is not available in this build yet', 'format', 'use --format native or f16');
}
