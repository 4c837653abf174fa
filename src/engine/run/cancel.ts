// Cancellation is cooperative: the pipeline checks the request's AbortSignal between layers and
// between calibration batches, so a cancel ends within one layer's time (well under 2 s on the
// fixture models). What was finished stays in the run's checkpoint; no output file is touched.

import { ErrorCode } from '../../protocol/messages';
import { ProtocolError } from '../../protocol/rpc';

export function throwIfCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new ProtocolError(ErrorCode.Cancelled, 'cancelled', undefined, 'completed blocks are kept in the run directory: resume with --resume');
  }
}

/** Lets timers and IPC messages (a `cancel`) through between two pieces of synchronous work. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
