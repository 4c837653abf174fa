// The one place GPTQ picks its Cholesky-of-the-inverse implementation (the upper U with
// UᵀU = H⁻¹, torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)).
// Until the blocked fast version in src/engine/linalg lands, this is the float64 reference.
// Errors: a non-positive pivot throws an Error named 'NotPositiveDefiniteError' (gptq.ts falls back).

export { choleskyInverseUpper_ref as choleskyInverseUpper } from '../linalg/cholesky_ref';
