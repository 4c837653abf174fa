// The engine's version, part of every run fingerprint: a checkpoint written by another engine
// version is refused on resume (its numbers could differ). Bump RUN_FORMAT when the run-directory
// layout or anything that changes output bytes changes.

export const ENGINE_VERSION = '0.1.0';
/** Layout of the run directory (run.json, ckpt/, hessians/); part of the fingerprint. */
export const RUN_FORMAT = 1;
