// Building the page from plain DOM calls: text is always inserted as text
// (never parsed as HTML), so names and messages from the cluster cannot
// inject markup.

/** Creates an element: h('a', {href: '#/x', class: 'y'}, 'text', child). */
export function h(tag, props, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** Appends children (strings, nodes, arrays of them; null is skipped). */
export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A table inside a scrolling wrapper (narrow screens scroll it sideways). */
export function table(caption, headers, rows, opts = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: opts.class || null },
      caption ? h('caption', { class: opts.captionHidden ? 'sr-only' : null }, caption) : null,
      h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', null, rows.length
        ? rows
        : h('tr', null, h('td', { colspan: headers.length, class: 'muted' }, opts.empty || 'None.')))));
}

/** A small labelled value, for summary cards. */
export function stat(label, value, extra) {
  return h('div', { class: 'stat' }, h('div', { class: 'stat-value' }, value),
    h('div', { class: 'stat-label' }, label), extra || null);
}

/** A status badge. */
export function badge(text, kind) {
  return h('span', { class: `badge badge-${kind || 'neutral'}` }, text);
}

/** Shows a message for a few seconds (errors stay until closed). */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  const close = h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss message' }, '×');
  const t = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', null, message), close);
  close.addEventListener('click', () => t.remove());
  box.append(t);
  if (kind !== 'error') setTimeout(() => t.remove(), 4000);
  return t;
}

/**
 * Marks a page's first render with data (Performance API), once per page
 * load: `agora:first-render:<page>`. `agora bench ui` reads it.
 */
export function firstRender(page) {
  const name = `agora:first-render:${page}`;
  if (!performance.getEntriesByName(name).length) performance.mark(name);
}
