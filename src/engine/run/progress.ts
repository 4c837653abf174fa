// Progress with an ETA, shaped as LSP WorkDoneProgress (begin/report/end). The pipeline counts
// work in "units" (multiply-accumulates, roughly), so the ETA weighs a 768×256 down_proj more than
// a 256×128 k_proj; the estimate is elapsed/done·remaining over the units finished so far.

import type { ProgressValue } from '../../protocol/messages';

export type ProgressSink = (value: ProgressValue) => void;

export class ProgressTracker {
  private done = 0;
  private readonly t0 = Date.now();
  /** Units already complete when the run started (resume): they cost no time in this run. */
  private readonly skipped: number;

  constructor(
    private readonly sink: ProgressSink,
    private readonly totalUnits: number,
    title: string,
    alreadyDone = 0,
  ) {
    this.done = alreadyDone;
    this.skipped = alreadyDone;
    sink({ kind: 'begin', title, cancellable: true, percentage: this.percentage() });
  }

  private percentage(): number {
    return this.totalUnits > 0 ? Math.min(100, Math.round((1000 * this.done) / this.totalUnits) / 10) : 0;
  }

  /** Seconds left, from this run's own pace; undefined until some work was timed. */
  eta(): number | undefined {
    const ranUnits = this.done - this.skipped;
    if (ranUnits <= 0) return undefined;
    const elapsed = (Date.now() - this.t0) / 1000;
    return Math.max(0, (elapsed / ranUnits) * (this.totalUnits - this.done));
  }

  /** Adds finished units and reports where the run is. */
  advance(units: number, message: string, where: { block?: number; layer?: string } = {}): void {
    this.done = Math.min(this.totalUnits, this.done + units);
    const eta = this.eta();
    this.sink({ kind: 'report', message, percentage: this.percentage(), etaSeconds: eta === undefined ? undefined : Math.round(eta), ...where });
  }

  end(message: string): void {
    this.sink({ kind: 'end', message });
  }
}

/** 75 → "1m15s": the ETA as people read it in a progress line. */
export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined) return '';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  const m = Math.floor(seconds / 60),
    s = Math.round(seconds % 60);
  return m < 60 ? `${m}m${String(s).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
