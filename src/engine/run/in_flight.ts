// Work started ahead, results taken in order: up to `limit` items run at once, `consume` sees each result in the
// items' order, and a failure is thrown only after everything started has settled (nothing is left running on
// buffers the caller is about to free).

/**
 * start(item) for the items, at most `limit` unfinished at a time, consume(result, item) in the items' order.
 * `beforeStart` runs before each start (a cancellation check: it throws to stop starting more).
 */
export async function inOrderInFlight<T, R>(
  items: readonly T[],
  limit: number,
  start: (item: T) => Promise<R>,
  consume: (result: R, item: T) => Promise<void>,
  beforeStart: () => void = () => {},
): Promise<void> {
  const started: Promise<R>[] = [];
  const launch = () => {
    beforeStart();
    const p = start(items[started.length]);
    p.catch(() => undefined); // awaited below in order; an early failure must not be unhandled meanwhile
    started.push(p);
  };
  try {
    for (let i = 0; i < items.length; i++) {
      while (started.length < items.length && started.length < i + Math.max(1, limit)) launch();
      await consume(await started[i], items[i]);
    }
  } catch (e) {
    await Promise.allSettled(started);
    throw e;
  }
}
