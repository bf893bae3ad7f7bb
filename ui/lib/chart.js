// Small live charts: one SVG with a line per series over time, no library.
import { h } from './dom.js';

const W = 300;
const H = 80;

/**
 * A chart of series [{name, class, values: [[t, v], ...]}] with v in
 * [0, max]. `label` names it for screen readers.
 */
export function lineChart(label, series, { max = 1, format = (v) => String(v) } = {}) {
  const all = series.flatMap((s) => s.values);
  const t0 = all.length ? Math.min(...all.map((p) => p[0])) : 0;
  const t1 = all.length ? Math.max(...all.map((p) => p[0])) : 1;
  const span = Math.max(t1 - t0, 60000);
  const x = (t) => ((t - (t1 - span)) / span) * W;
  const y = (v) => H - (Math.min(Math.max(v, 0), max) / (max || 1)) * (H - 4) - 2;
  const svg = h('svg:svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label,
    preserveAspectRatio: 'none',
  });
  for (const frac of [0.25, 0.5, 0.75]) {
    svg.append(h('svg:line', { x1: 0, x2: W, y1: y(max * frac), y2: y(max * frac), class: 'grid' }));
  }
  for (const s of series) {
    if (!s.values.length) continue;
    const d = s.values.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join('');
    svg.append(h('svg:path', { d, class: `line ${s.class || ''}` }));
  }
  const legend = h('div', { class: 'legend' }, series.map((s) => {
    const last = s.values.length ? s.values[s.values.length - 1][1] : null;
    return h('span', { class: `key ${s.class || ''}` }, `${s.name}: ${last === null ? '–' : format(last)}`);
  }));
  return h('figure', { class: 'chart-box' }, h('figcaption', null, label), svg, legend);
}
