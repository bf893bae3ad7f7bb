// Numbers, sizes and times as people read them.

export function num(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  return Number(x).toLocaleString('en', { maximumFractionDigits: digits });
}

/** Megabytes (Mesos's unit for mem and disk) as MB / GB / TB. */
export function mb(x) {
  if (x === null || x === undefined) return '–';
  if (x >= 1024 * 1024) return `${num(x / 1024 / 1024, 1)} TB`;
  if (x >= 1024) return `${num(x / 1024, 1)} GB`;
  return `${num(x, 0)} MB`;
}

/** A resource quantity in its unit. */
export function qty(kind, x) {
  return kind === 'mem' || kind === 'disk' ? mb(x) : num(x);
}

export function pct(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  return `${num(x * 100, 1)}%`;
}

/** Seconds (float) or an ISO string to a Date. */
function toDate(t) {
  if (t === null || t === undefined || t === '') return null;
  if (typeof t === 'number') return new Date(t * 1000);
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function time(t) {
  const d = toDate(t);
  if (!d) return '–';
  return d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
}

/** "3 min ago" / "in 2 h". */
export function ago(t, now = Date.now()) {
  const d = toDate(t);
  if (!d) return '–';
  const s = Math.round((now - d.getTime()) / 1000);
  const span = duration(Math.abs(s));
  return s >= 0 ? `${span} ago` : `in ${span}`;
}

/** A duration in seconds as "1 h 2 min", "3.2 s". */
export function duration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return '–';
  if (s < 1) return `${num(s * 1000, 0)} ms`;
  if (s < 60) return `${num(s, 1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

/** Seconds between two times (either may be missing). */
export function between(a, b) {
  const x = toDate(a);
  const y = toDate(b);
  if (!x || !y) return null;
  return (y.getTime() - x.getTime()) / 1000;
}

/** A task state without its prefix: TASK_RUNNING -> RUNNING. */
export const state = (s) => (s || '').replace(/^TASK_/, '');

/** The kind of badge for a task or run state. */
export function stateKind(s) {
  switch (state(s)) {
    case 'RUNNING': case 'SUCCESS': case 'FINISHED': case 'ACTIVE': case 'connected': case 'Running':
      return 'ok';
    case 'STAGING': case 'STARTING': case 'INITIAL': case 'Deploying': case 'Waiting': case 'Delayed':
    case 'recovering':
      return 'busy';
    case 'FAILED': case 'ERROR': case 'LOST': case 'GONE': case 'MISSED': case 'unreachable':
      return 'bad';
    case 'KILLED': case 'KILLING': case 'UNREACHABLE': case 'DROPPED': case 'disconnected': case 'SKIPPED':
      return 'warn';
    default:
      return 'neutral';
  }
}
