// Input checks shared by the quantizers: a NaN or ±Inf weight or Hessian entry is a user-visible
// problem (a broken checkpoint, an overflowing calibration run), reported with the tensor's name.

import { ProtocolError } from '../../protocol/rpc';
import { ErrorCode } from '../../protocol/messages';

/** Throws ProtocolError(NonFinite) naming the tensor and the first bad index. */
export function assertFiniteArray(vals: ArrayLike<number>, what: string, where: string): void {
  for (let i = 0; i < vals.length; i++) {
    if (!Number.isFinite(vals[i])) {
      throw new ProtocolError(
        ErrorCode.NonFinite,
        `${what} contains a non-finite value (${vals[i]}) at flat index ${i}`,
        where,
        what === 'H'
          ? 'the calibration activations overflowed or contain NaN: check the model in float32 and the calibration text'
          : 'the checkpoint contains NaN/Inf weights: check the source file',
      );
    }
  }
}
