// Resource bars: used, offered and free parts of a total.
import { h } from './dom.js';
import { qty, pct } from './format.js';

/** A bar for one resource kind: used | offered | free of total. */
export function resourceBar(kind, used, offered, total) {
  const u = total > 0 ? Math.min(used / total, 1) : 0;
  const o = total > 0 ? Math.min(offered / total, 1 - u) : 0;
  const text = `${kind}: ${qty(kind, used)} used, ${qty(kind, offered)} offered of ${qty(kind, total)}`;
  const bar = h('div', { class: 'bar', role: 'img', 'aria-label': text, title: text },
    h('span', { class: 'bar-used', style: { width: `${u * 100}%` } }),
    h('span', { class: 'bar-offered', style: { width: `${o * 100}%` } }));
  return h('div', { class: 'bar-row' },
    h('span', { class: 'bar-kind' }, kind), bar,
    h('span', { class: 'bar-text' }, `${qty(kind, used)} / ${qty(kind, total)}`,
      offered > 0 ? h('span', { class: 'muted' }, ` (+${qty(kind, offered)} offered)`) : null));
}

/** The cpus, mem and disk bars of {total, used, offered} resource objects. */
export function resourceBars(r, kinds = ['cpus', 'mem', 'disk']) {
  const of = (part, k) => ((r || {})[part] || {})[k] || 0;
  return h('div', { class: 'bars' }, kinds
    .filter((k) => k !== 'disk' || of('total', k) > 0)
    .map((k) => resourceBar(k, of('used', k), of('offered', k), of('total', k))));
}

/** A health bar: healthy | running (no health checks, or no verdict yet) | staged | unhealthy, of instances. */
export function healthBar(app) {
  const n = Math.max(app.instances || 0, (app.tasksRunning || 0) + (app.tasksStaged || 0));
  const healthy = app.tasksHealthy || 0;
  const unhealthy = app.tasksUnhealthy || 0;
  const running = Math.max((app.tasksRunning || 0) - healthy - unhealthy, 0);
  const staged = app.tasksStaged || 0;
  const part = (count, cls) => h('span', { class: cls, style: { width: `${n ? (count / n) * 100 : 0}%` } });
  const text = `${healthy} healthy, ${unhealthy} unhealthy, ${running} running without a health verdict, `
    + `${staged} staged, of ${app.instances} instances`;
  return h('div', { class: 'bar health', role: 'img', 'aria-label': text, title: text },
    part(healthy, 'h-healthy'), part(running, 'h-running'), part(staged, 'h-staged'), part(unhealthy, 'h-unhealthy'));
}

export { pct };
