// The cluster pages: the dashboard, agents, frameworks and offers, all
// drawn from the master's live summary (/state-summary/events).
import { h, replace, table, stat, badge, firstRender } from '../lib/dom.js';
import * as live from '../lib/live.js';
import { resourceBars } from '../lib/bars.js';
import { lineChart } from '../lib/chart.js';
import { num, pct, time, ago, qty, state, stateKind } from '../lib/format.js';
import { taskTable } from './tasks.js';
import { get, seg } from '../lib/api.js';

const KINDS = ['cpus', 'mem', 'disk'];

/** Renders `draw(summary)` into root now and on every update. */
function livePage(root, title, draw, page) {
  const body = h('div');
  replace(root, h('h1', null, title), body);
  const unsubscribe = live.subscribe((s) => {
    replace(body, draw(s));
    if (page) firstRender(page);
  });
  if (!live.summary()) replace(body, h('p', { class: 'muted' }, 'Waiting for the master…'));
  return unsubscribe;
}

const agentName = (s, id) => {
  const a = (s.agents || []).find((x) => x.id === id);
  return a ? a.hostname : id;
};
const frameworkName = (s, id) => {
  const f = (s.frameworks || []).find((x) => x.id === id);
  return f ? f.name : id;
};

function mastersCard(s) {
  const leader = s.leader || {};
  return h('section', { class: 'card', 'aria-labelledby': 'masters-h' },
    h('h2', { id: 'masters-h' }, 'Masters'),
    h('dl', { class: 'kv' },
      h('dt', null, 'Leading'), h('dd', null, badge('leader', 'ok'), ' ', leader.address || '–',
        h('span', { class: 'muted' }, ` (${leader.id || '?'})`)),
      h('dt', null, 'This master'), h('dd', null, s.address || '–', s.elected ? ' (leads)' : ' (stands by)'),
      h('dt', null, 'Standbys'), h('dd', null, s.standbys && s.standbys.length
        ? s.standbys.map((m) => h('div', null, m.address))
        : h('span', { class: 'muted' }, 'none known (standbys register in ZooKeeper)')),
      h('dt', null, 'Version'), h('dd', null, s.version || '–'),
      h('dt', null, 'Leading since'), h('dd', null, time(s.started_at))));
}

function resourcesCard(s) {
  const r = s.resources || {};
  return h('section', { class: 'card', 'aria-labelledby': 'res-h' },
    h('h2', { id: 'res-h' }, 'Resources'),
    resourceBars(r),
    h('p', { class: 'legend' }, h('span', { class: 'key used' }, 'used'), ' ',
      h('span', { class: 'key offered' }, 'offered'), ' ', h('span', { class: 'key free' }, 'free')));
}

/** The charts' card: redrawn alone on samples that bring no new summary. */
const chartsBox = h('div');

function chartsCard() {
  replace(chartsBox, charts());
  return chartsBox;
}

function charts() {
  const samples = live.samples();
  const series = (k, part) => samples.map((p) => [p.t, p[k].total ? p[k][part] / p[k].total : 0]);
  return h('section', { class: 'card wide', 'aria-labelledby': 'charts-h' },
    h('h2', { id: 'charts-h' }, 'Allocation over time'),
    h('div', { class: 'charts' },
      KINDS.slice(0, 2).map((k) => lineChart(`${k} allocated (share of total)`, [
        { name: 'used', class: 'used', values: series(k, 'used') },
        { name: 'offered', class: 'offered', values: series(k, 'offered') },
      ], { max: 1, format: pct })),
      lineChart('running tasks', [
        { name: 'running', class: 'used', values: samples.map((p) => [p.t, p.tasks]) },
      ], { max: Math.max(1, ...samples.map((p) => p.tasks)) * 1.2, format: (v) => num(v, 0) })));
}

function tasksCard(s) {
  const counts = Object.entries(s.tasks_by_state || {});
  return h('section', { class: 'card', 'aria-labelledby': 'tasks-h' },
    h('h2', { id: 'tasks-h' }, 'Tasks by state'),
    counts.length
      ? h('ul', { class: 'chips' }, counts.map(([st, n]) => h('li', null,
        h('a', { href: `#/tasks?state=${st}`, class: `chip badge-${stateKind(st)}` }, `${state(st)} `, h('strong', null, num(n, 0))))))
      : h('p', { class: 'muted' }, 'No tasks yet.'));
}

function agentRows(s, agents) {
  return agents.map((a) => h('tr', null,
    h('td', null, h('a', { href: `#/agents/${seg(a.id)}` }, a.hostname), h('div', { class: 'muted small' }, a.id)),
    h('td', null, badge(a.status, stateKind(a.status))),
    h('td', { class: 'bars-cell' }, resourceBars(a.resources)),
    h('td', null, attributes(a.attributes)),
    h('td', { class: 'num' }, num(a.tasks, 0))));
}

function attributes(attrs) {
  const e = Object.entries(attrs || {});
  return e.length ? h('ul', { class: 'attrs' }, e.map(([k, v]) => h('li', null, h('code', null, `${k}:${v}`))))
    : h('span', { class: 'muted' }, '–');
}

function agentsTable(s, caption) {
  return table(caption, ['Agent', 'Status', 'Resources (used / total)', 'Attributes', 'Tasks'],
    agentRows(s, s.agents || []), { empty: 'No agents have registered.', captionHidden: true });
}

function frameworksTable(s, caption) {
  const rows = (s.frameworks || []).map((f) => {
    const counts = f.tasks_by_state || {};
    const link = f.webui_url ? proxiedUi(f) : null;
    return h('tr', null,
      h('td', null, h('a', { href: `#/frameworks/${seg(f.id)}` }, f.name), h('div', { class: 'muted small' }, f.id)),
      h('td', null, badge(f.connected ? 'connected' : 'disconnected', f.connected ? 'ok' : 'warn')),
      h('td', null, (f.roles || []).join(', ')),
      h('td', { class: 'num' }, (f.weights || []).map((w) => num(w)).join(', ')),
      h('td', { class: 'num' }, pct(f.dominant_share)),
      h('td', null, KINDS.filter((k) => (f.used_resources || {})[k]).map((k) => `${k} ${qty(k, f.used_resources[k])}`).join(', ') || '–'),
      h('td', { class: 'num' }, num(f.active_tasks, 0), counts.TASK_FAILED ? h('span', { class: 'muted' }, ` (${counts.TASK_FAILED} failed)`) : null),
      h('td', { class: 'num' }, num(f.offers, 0)),
      h('td', null, link));
  });
  return table(caption, ['Framework', 'Status', 'Roles', 'Weight', 'Dominant share', 'Using', 'Active tasks', 'Offers', 'Web UI'],
    rows, { empty: 'No frameworks are subscribed.', captionHidden: true });
}

/** The link to a framework's own pages, through the master's proxy. */
function proxiedUi(f) {
  if (f.name === 'agora-services') return h('a', { href: '#/apps' }, 'Apps');
  if (f.name === 'agora-batch') return h('a', { href: '#/jobs' }, 'Jobs');
  return h('a', { href: `/frameworks/${seg(f.id)}/` }, 'Open');
}

function offersTable(s, caption) {
  const rows = (s.offers || []).map((o) => h('tr', null,
    h('td', null, h('code', null, o.id)),
    h('td', null, h('a', { href: `#/frameworks/${seg(o.framework_id)}` }, frameworkName(s, o.framework_id))),
    h('td', null, h('a', { href: `#/agents/${seg(o.agent_id)}` }, agentName(s, o.agent_id))),
    h('td', null, o.role),
    h('td', null, KINDS.filter((k) => (o.resources || {})[k]).map((k) => `${k} ${qty(k, o.resources[k])}`).join(', '),
      o.resources && o.resources.ports ? ` ports ${o.resources.ports}` : '')));
  const more = (s.offer_count || 0) > rows.length ? h('p', { class: 'muted' }, `Showing ${rows.length} of ${s.offer_count} offers.`) : null;
  return [table(caption, ['Offer', 'To framework', 'On agent', 'Role', 'Resources'], rows,
    { empty: 'No outstanding offers.', captionHidden: true }), more];
}

export function dashboard(root) {
  const stopSamples = live.onSample(() => replace(chartsBox, charts()));
  const stop = livePage(root, 'Cluster', (s) => [
    h('div', { class: 'stats' },
      stat('agents', num((s.agents || []).filter((a) => a.status === 'connected').length, 0),
        h('div', { class: 'muted small' }, `${(s.agents || []).length} known`)),
      stat('frameworks', num((s.frameworks || []).length, 0)),
      stat('running tasks', num((s.tasks_by_state || {}).TASK_RUNNING || 0, 0)),
      stat('outstanding offers', num(s.offer_count || 0, 0))),
    h('div', { class: 'grid' }, mastersCard(s), resourcesCard(s), tasksCard(s)),
    chartsCard(),
    h('section', { 'aria-labelledby': 'agents-h' }, h('h2', { id: 'agents-h' }, 'Agents'), agentsTable(s, 'Agents')),
    h('section', { 'aria-labelledby': 'fw-h' }, h('h2', { id: 'fw-h' }, 'Frameworks'), frameworksTable(s, 'Frameworks')),
    h('section', { 'aria-labelledby': 'roles-h' }, h('h2', { id: 'roles-h' }, 'Roles'),
      table('Roles', ['Role', 'Weight', 'Share'], (s.roles || []).map((r) => h('tr', null,
        h('td', null, r.role), h('td', { class: 'num' }, num(r.weight)), h('td', { class: 'num' }, pct(r.share)))),
      { empty: 'No roles in use.', captionHidden: true })),
    h('section', { 'aria-labelledby': 'offers-h' }, h('h2', { id: 'offers-h' }, 'Outstanding offers'), offersTable(s, 'Outstanding offers')),
  ], 'cluster');
  return () => { stop(); stopSamples(); };
}

export function agents(root) {
  return livePage(root, 'Agents', (s) => agentsTable(s, 'Agents'));
}

export function agent(root, [id]) {
  const tasksBox = h('div');
  const stopTasks = taskTable(tasksBox, { agent_id: id });
  const unsubscribe = livePage(root, 'Agent', (s) => {
    const a = (s.agents || []).find((x) => x.id === id);
    if (!a) return h('p', null, `The master knows no agent ${id}.`);
    return [
      h('h2', null, a.hostname, ' ', badge(a.status, stateKind(a.status))),
      h('dl', { class: 'kv' },
        h('dt', null, 'Id'), h('dd', null, h('code', null, a.id)),
        h('dt', null, 'HTTP'), h('dd', null, a.http_address || '–'),
        h('dt', null, 'Version'), h('dd', null, a.version || '–'),
        h('dt', null, 'Registered'), h('dd', null, time(a.registered_at), ` (${ago(a.registered_at)})`),
        h('dt', null, 'Attributes'), h('dd', null, attributes(a.attributes)),
        h('dt', null, 'Resources'), h('dd', null, a.resources_text)),
      resourceBars(a.resources),
      h('h2', null, 'Tasks on this agent'), tasksBox,
    ];
  });
  return () => { unsubscribe(); stopTasks(); };
}

export function frameworks(root) {
  return livePage(root, 'Frameworks', (s) => frameworksTable(s, 'Frameworks'));
}

export function framework(root, [id]) {
  const tasksBox = h('div');
  const stopTasks = taskTable(tasksBox, { framework_id: id });
  const unsubscribe = livePage(root, 'Framework', (s) => {
    const f = (s.frameworks || []).find((x) => x.id === id);
    if (!f) return h('p', null, `The master knows no framework ${id}.`);
    return [
      h('h2', null, f.name, ' ', badge(f.connected ? 'connected' : 'disconnected', f.connected ? 'ok' : 'warn')),
      h('dl', { class: 'kv' },
        h('dt', null, 'Id'), h('dd', null, h('code', null, f.id)),
        h('dt', null, 'Roles'), h('dd', null, (f.roles || []).map((r, i) => `${r} (weight ${num((f.weights || [])[i])})`).join(', ')),
        h('dt', null, 'Dominant share'), h('dd', null, pct(f.dominant_share)),
        h('dt', null, 'User / host'), h('dd', null, `${f.user || '–'} @ ${f.hostname || '–'}`),
        h('dt', null, 'Web UI'), h('dd', null, f.webui_url ? [proxiedUi(f), h('span', { class: 'muted' }, ` (${f.webui_url}, through the master)`)] : '–'),
        h('dt', null, 'Registered'), h('dd', null, time(f.registered_at)),
        f.connected ? null : [h('dt', null, 'Disconnected'), h('dd', null, time(f.disconnected_at))],
        h('dt', null, 'Failover timeout'), h('dd', null, `${num(f.failover_timeout, 0)} s`)),
      h('h2', null, 'Tasks'), tasksBox,
    ];
  });
  return () => { unsubscribe(); stopTasks(); };
}

export function offers(root) {
  return livePage(root, 'Outstanding offers', (s) => offersTable(s, 'Outstanding offers'));
}

export { get };
