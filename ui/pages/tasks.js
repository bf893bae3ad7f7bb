// Tasks (the master's /tasks) and task logs (the master's proxy to the
// task's agent: /tasks/{id}/logs, followed as the output grows).
import { h, replace, table, badge } from '../lib/dom.js';
import { get, seg } from '../lib/api.js';
import { poll } from '../lib/poll.js';
import { num, time, state, stateKind, qty } from '../lib/format.js';

const STATES = ['TASK_STAGING', 'TASK_STARTING', 'TASK_RUNNING', 'TASK_KILLING', 'TASK_FINISHED',
  'TASK_FAILED', 'TASK_KILLED', 'TASK_ERROR', 'TASK_LOST', 'TASK_UNREACHABLE', 'TASK_GONE', 'TASK_DROPPED'];

/** The link to a task's logs page. */
export function logsLink(taskId, frameworkId, label = 'Logs') {
  const q = frameworkId ? `?framework_id=${encodeURIComponent(frameworkId)}` : '';
  return h('a', { href: `#/tasks/${seg(taskId)}/logs${q}`, 'aria-label': `Logs of task ${taskId}` }, label);
}

function taskRows(tasks) {
  return tasks.map((t) => h('tr', null,
    h('td', null, h('code', null, t.id)),
    h('td', null, badge(state(t.state), stateKind(t.state))),
    h('td', null, h('a', { href: `#/frameworks/${seg(t.framework_id)}` }, t.framework_id.slice(-12))),
    h('td', null, h('a', { href: `#/agents/${seg(t.agent_id)}` }, t.agent_id.slice(-12))),
    h('td', null, ['cpus', 'mem'].map((k) => `${k} ${qty(k, (t.resources || {})[k] || 0)}`).join(', ')),
    h('td', null, time(t.updated_at || t.staged_at)),
    h('td', { class: 'msg' }, t.exit_code !== null && t.exit_code !== undefined ? `exit ${t.exit_code}. ` : '', t.message || ''),
    h('td', null, logsLink(t.id, t.framework_id))));
}

/** A live table of the tasks matching `filter` (state, framework_id, agent_id); returns a stop function. */
export function taskTable(box, filter, limit = 200) {
  const q = new URLSearchParams({ limit: String(limit) });
  for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
  const p = poll((signal) => get(`/tasks?${q}`, { signal }), {
    everyMs: 2000,
    onData: (d) => replace(box,
      table('Tasks', ['Task', 'State', 'Framework', 'Agent', 'Resources', 'Updated', 'Message', ''], taskRows(d.tasks),
        { empty: 'No tasks.', captionHidden: true }),
      d.total > d.tasks.length ? h('p', { class: 'muted' }, `Showing ${d.tasks.length} of ${num(d.total, 0)} tasks.`) : null),
    onError: (e, retry) => replace(box, h('p', { class: 'error', role: 'alert' },
      `Cannot list the tasks: ${e.message} (retrying in ${Math.round(retry / 1000)} s)`)),
  });
  return () => p.stop();
}

export function list(root, _params, query) {
  const current = query.get('state') || '';
  const select = h('select', { id: 'state-filter', name: 'state' },
    h('option', { value: '' }, 'any state'),
    STATES.map((s) => h('option', { value: s, selected: s === current }, state(s))));
  select.addEventListener('change', () => {
    location.hash = select.value ? `#/tasks?state=${select.value}` : '#/tasks';
  });
  const box = h('div');
  replace(root, h('h1', null, 'Tasks'),
    h('div', { class: 'toolbar' }, h('label', { for: 'state-filter' }, 'State '), select),
    box);
  return taskTable(box, { state: current });
}

/**
 * Follows a log: reads /tasks/{id}/logs?follow=true as a stream and appends
 * to `pre`; on a broken stream it resumes from the bytes it has. Returns a
 * stop function.
 */
export function followLog(url, pre, status) {
  let stopped = false;
  let offset = 0;
  let controller = null;
  let retry = 1000;
  let notFound = 0;
  const decoder = new TextDecoder();
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const resp = await fetch(`${url}&follow=true&offset=${offset}`, { signal: controller.signal, headers: { Accept: 'text/plain' } });
        if (!resp.ok) {
          let msg = `${resp.status} ${resp.statusText}`;
          try { msg = (await resp.json()).message || msg; } catch { /* not JSON */ }
          // A task just launched may not be known yet: ask again a few times.
          if (resp.status === 404 && notFound < 10) {
            notFound += 1;
            status(`Waiting for the task's output (${msg})…`, 'busy');
            await new Promise((r) => setTimeout(r, 1000));
            continue;
          }
          status(`Cannot read the log: ${msg}`, 'error');
          return;
        }
        status('Following…', 'busy');
        const reader = resp.body.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          offset += value.length;
          retry = 1000;
          const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append(decoder.decode(value, { stream: true }));
          if (atBottom) pre.scrollTop = pre.scrollHeight;
        }
        status(`End of the log (${num(offset, 0)} bytes): the task has ended.`, 'ok');
        return;
      } catch (e) {
        if (stopped || e.name === 'AbortError') return;
        status(`Connection lost (${e.message}); resuming in ${retry / 1000} s…`, 'error');
        await new Promise((r) => setTimeout(r, retry));
        retry = Math.min(retry * 2, 15000);
      }
    }
  }
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}

/** A stdout/stderr viewer with follow, for `url` (which takes &stream=). */
export function logViewer(baseUrl, title) {
  let stop = null;
  const pre = h('pre', { class: 'log', tabindex: '0', 'aria-label': `${title}: output` });
  const statusEl = h('p', { class: 'log-status', role: 'status' });
  const setStatus = (text, kind) => { statusEl.textContent = text; statusEl.className = `log-status log-${kind}`; };
  const tabs = ['stdout', 'stderr'].map((s) => h('button', { type: 'button', class: 'tab', role: 'tab', 'aria-selected': 'false', 'data-stream': s }, s));
  const select = (stream) => {
    if (stop) stop();
    for (const t of tabs) t.setAttribute('aria-selected', String(t.dataset.stream === stream));
    pre.replaceChildren();
    setStatus('Loading…', 'busy');
    const sep = baseUrl.includes('?') ? '&' : '?';
    stop = followLog(`${baseUrl}${sep}stream=${stream}`, pre, setStatus);
  };
  for (const t of tabs) t.addEventListener('click', () => select(t.dataset.stream));
  const el = h('div', { class: 'log-viewer' }, h('div', { role: 'tablist', 'aria-label': `${title}: stream` }, tabs), statusEl, pre);
  select('stdout');
  return { el, stop: () => stop && stop() };
}

export function logs(root, [taskId], query) {
  const fw = query.get('framework_id');
  const base = `/tasks/${seg(taskId)}/logs${fw ? `?framework_id=${encodeURIComponent(fw)}` : ''}`;
  const viewer = logViewer(base, `Task ${taskId}`);
  replace(root, h('h1', null, 'Task logs'), h('p', null, h('code', null, taskId)), viewer.el);
  return viewer.stop;
}
