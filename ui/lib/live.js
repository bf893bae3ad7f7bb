// The cluster as the master streams it (/state-summary/events, Server-Sent
// Events). A lost connection is shown in the header and retried with
// backoff; the page recovers by itself. A standby master's summary names
// the leader, and the UI moves there.

const listeners = new Set();
const history = [];
/** Samples kept for the charts (one per summary, about one a second). */
const HISTORY = 600;
let latest = null;
let source = null;
let retryMs = 1000;
let retryTimer = null;
let status = 'connecting';

/** The latest summary (null until the first arrives). */
export const summary = () => latest;
/** [{t, cpus: {used, offered, total}, mem: {...}, disk: {...}, tasks}] */
export const samples = () => history;
export const connection = () => status;

const sampleListeners = new Set();

/** Calls fn() on every new sample that came without a new summary (the charts move on). */
export function onSample(fn) {
  sampleListeners.add(fn);
  return () => sampleListeners.delete(fn);
}

/** Calls fn(summary) now (if known) and on every new summary; returns an unsubscribe. */
export function subscribe(fn) {
  listeners.add(fn);
  if (latest) fn(latest);
  return () => listeners.delete(fn);
}

function setStatus(s, detail) {
  status = s;
  const el = document.getElementById('conn');
  if (!el) return;
  el.className = `conn conn-${s}`;
  el.textContent = s === 'live' ? 'Live'
    : s === 'lost' ? `Connection lost — retrying${detail ? ` in ${Math.round(detail / 1000)} s` : ''}`
      : 'Connecting…';
  el.title = s === 'live' ? 'Receiving updates from the master' : 'Not receiving updates from the master';
}

let lastSample = 0;

function record(s) {
  lastSample = Date.now();
  const r = s.resources || {};
  const sample = { t: Date.now(), tasks: (s.tasks_by_state || {}).TASK_RUNNING || 0 };
  for (const k of ['cpus', 'mem', 'disk']) {
    sample[k] = {
      used: (r.used || {})[k] || 0,
      offered: (r.offered || {})[k] || 0,
      total: (r.total || {})[k] || 0,
    };
  }
  history.push(sample);
  if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
}

function deliver(s) {
  if (s.elected === false) {
    const leader = s.leader && s.leader.address;
    if (leader && leader !== location.host) {
      // A standby: the UI lives on the leader.
      location.replace(`${location.protocol}//${leader}/${location.hash}`);
      return;
    }
  }
  latest = s;
  record(s);
  for (const fn of listeners) {
    try { fn(s); } catch (e) { console.error(e); }
  }
}

function open() {
  clearTimeout(retryTimer);
  source = new EventSource('/state-summary/events');
  source.addEventListener('summary', (e) => {
    retryMs = 1000;
    setStatus('live');
    deliver(JSON.parse(e.data));
  });
  source.addEventListener('error', () => {
    source.close();
    setStatus('lost', retryMs);
    retryTimer = setTimeout(open, retryMs);
    retryMs = Math.min(retryMs * 2, 15000);
  });
}

/** Starts the stream (once). */
export function start() {
  if (!source) {
    setStatus('connecting');
    open();
    // The master sends a summary only when something changed: a quiet
    // cluster still gets a sample every 2 s, so the charts go on in time.
    setInterval(() => {
      if (!latest || status !== 'live' || Date.now() - lastSample < 1900) return;
      record(latest);
      for (const fn of sampleListeners) {
        try { fn(); } catch (e) { console.error(e); }
      }
    }, 2000);
    // A page left for another (kept in the back/forward cache) must not
    // hold its connection: browsers allow only six per host over HTTP/1.1.
    window.addEventListener('pagehide', () => {
      clearTimeout(retryTimer);
      source.close();
    });
    window.addEventListener('pageshow', (e) => {
      if (e.persisted) open();
    });
  }
}
