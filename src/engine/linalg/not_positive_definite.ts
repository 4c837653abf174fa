// What every Cholesky here throws on a pivot that is not positive: GPTQ catches it by name and falls back
// to round-to-nearest for the layer (quant/gptq.ts).

export class NotPositiveDefiniteError extends Error {
  constructor(
    readonly pivotIndex: number,
    readonly pivotValue: number,
  ) {
    super(`matrix is not positive definite (pivot ${pivotIndex} = ${pivotValue})`);
    this.name = 'NotPositiveDefiniteError';
  }
}
