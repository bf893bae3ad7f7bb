// Polling a framework's API with backoff: every `everyMs` while it answers,
// backing off up to 30 s while it does not; the error is shown by the
// caller and cleared once it answers again.

export function poll(fetchOnce, { everyMs = 2000, onData, onError }) {
  let stopped = false;
  let timer = null;
  let delay = everyMs;
  let controller = null;
  async function tick() {
    if (stopped) return;
    controller = new AbortController();
    try {
      const data = await fetchOnce(controller.signal);
      if (stopped) return;
      delay = everyMs;
      onData(data);
    } catch (e) {
      if (stopped || e.name === 'AbortError') return;
      delay = Math.min(delay * 2, 30000);
      if (onError) onError(e, delay);
    }
    if (!stopped) timer = setTimeout(tick, document.hidden ? Math.max(delay, 10000) : delay);
  }
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (controller) controller.abort();
    },
    /** Polls again at once (after an action). */
    now() {
      if (stopped) return;
      clearTimeout(timer);
      delay = everyMs;
      tick();
    },
  };
}
