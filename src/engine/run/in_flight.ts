// Work started ahead, results taken in order: up to `limit` items run at once, `consume` sees each result in the
// items' order, and a failure is thrown only after everything started has settled (nothing is left running on
// buffers the caller is about to free). An item that fails while others run beside it can be run again alone
// (a GPU that held one layer's buffers but not three: no backend reports free device memory before it runs out).

/**
 * start(item) for the items, at most `limit` unfinished at a time, consume(result, item) in the items' order.
 * `beforeStart` runs before each start (a cancellation check: it throws to stop starting more). `retryAlone(e, item)`:
 * for an item that failed with e after being started beside others, true = once everything started has settled, run
 * it again alone and every later item one at a time (a second failure is thrown).
 */
export async function inOrderInFlight<T, R>(
  items: readonly T[],
  limit: number,
  start: (item: T) => Promise<R>,
  consume: (result: R, item: T) => Promise<void>,
  beforeStart: () => void = () => {},
  retryAlone: (e: unknown, item: T) => boolean = () => false,
): Promise<void> {
  const started: Promise<R>[] = [];
  const besideOthers: boolean[] = [];
  let now = Math.max(1, limit);
  const launch = (i: number) => {
    beforeStart();
    const p = start(items[i]);
    p.catch(() => undefined); // awaited below in order; an early failure must not be unhandled meanwhile
    started[i] = p;
    besideOthers[i] = now > 1;
  };
  try {
    for (let i = 0; i < items.length; i++) {
      while (started.length < items.length && started.length < i + now) launch(started.length);
      let r: R;
      try {
        r = await started[i];
      } catch (e) {
        if (!besideOthers[i] || !retryAlone(e, items[i])) throw e;
        now = 1;
        await Promise.allSettled(started);
        launch(i);
        r = await started[i];
      }
      await consume(r, items[i]);
    }
  } catch (e) {
    await Promise.allSettled(started);
    throw e;
  }
}
