// Apps (the services framework, Marathon's /v2 API through the master's
// proxy at /services): the list with status and health; Scale, Restart,
// Suspend and Destroy; an app's tasks, deployment, versions and last
// failure; create and edit from JSON. Every action is the documented REST
// call, and the API's errors are shown where the action was made.
import { h, replace, table, badge, toast, firstRender } from '../lib/dom.js';
import { call, get } from '../lib/api.js';
import { poll } from '../lib/poll.js';
import { dialog, confirmDialog } from '../lib/dialog.js';
import { healthBar } from '../lib/bars.js';
import { jsonForm } from '../lib/jsonedit.js';
import { time, ago, num, state, stateKind } from '../lib/format.js';
import { logsLink } from './tasks.js';

const API = '/services/v2';
/** Read-only keys of an app as the API answers it (not part of a definition). */
const READ_ONLY = ['version', 'versionInfo', 'tasksStaged', 'tasksRunning', 'tasksHealthy',
  'tasksUnhealthy', 'deployments', 'tasks', 'lastTaskFailure', 'taskStats'];

/** The app's path in the API: ids start with `/`. */
const appPath = (id) => `${API}/apps${id.split('/').map(encodeURIComponent).join('/')}`;
/** The app's page. */
const appHref = (id) => `#/apps${id}`;

/** Marathon's app status: Deploying, Suspended, Delayed, Waiting or Running. */
export function appStatus(app, queued) {
  if ((app.deployments || []).length) return 'Deploying';
  if (app.instances === 0 && !(app.tasksRunning || 0)) return 'Suspended';
  const q = queued && queued.get(app.id);
  if (q) return q.delay && !q.delay.overdue && q.delay.timeLeftSeconds > 0 ? 'Delayed' : 'Waiting';
  return 'Running';
}

function errorBanner() {
  const el = h('div', { role: 'alert' });
  return {
    el,
    show(e, retry) {
      replace(el, h('div', { class: 'banner' }, e.status === 404 && /agora-services/.test(e.message)
        ? `The services framework is not running: ${e.message}`
        : `The services API did not answer: ${e.message}`,
      retry ? ` Retrying in ${Math.round(retry / 1000)} s.` : ''));
    },
    clear() { el.replaceChildren(); },
  };
}

function deployed(verb, id, data) {
  toast(`${verb} ${id}${data && data.deploymentId ? ` (deployment ${data.deploymentId})` : ''}.`, 'ok');
}

/** The Scale dialog: PUT /v2/apps/{id} {"instances": n}. */
export async function scaleDialog(app, after) {
  const input = h('input', { id: 'scale-instances', type: 'number', min: '0', step: '1', required: true, value: String(app.instances), inputmode: 'numeric' });
  const force = h('input', { id: 'scale-force', type: 'checkbox' });
  const body = h('div', null,
    h('div', { class: 'field' }, h('label', { for: 'scale-instances' }, 'Instances'), input),
    h('div', { class: 'check' }, force, h('label', { for: 'scale-force' }, 'Force (replace a deployment in progress)')));
  const r = await dialog({
    title: `Scale ${app.id}`, body, confirm: 'Scale',
    action: async () => {
      const n = Number(input.value);
      if (!Number.isInteger(n) || n < 0) throw new Error('Instances must be a whole number of 0 or more.');
      const { data } = await call('PUT', `${appPath(app.id)}?force=${force.checked}`, { instances: n });
      return { n, data };
    },
  });
  if (r) {
    deployed(`Scaling to ${r.n}:`, app.id, r.data);
    if (after) after();
  }
}

async function restart(app, after) {
  if (!await confirmDialog(`Restart ${app.id}?`, 'Every instance is replaced by a new one, keeping the upgrade strategy\'s capacity.', 'Restart',
    async (form) => { form.result = (await call('POST', `${appPath(app.id)}/restart`)).data; })) return;
  deployed('Restarting', app.id);
  if (after) after();
}

async function suspend(app, after) {
  if (!await confirmDialog(`Suspend ${app.id}?`, 'It is scaled to 0 instances: every task is killed. Scale it up again to resume.', 'Suspend',
    () => call('PUT', `${appPath(app.id)}?force=false`, { instances: 0 }))) return;
  deployed('Suspending', app.id);
  if (after) after();
}

async function destroy(app, after) {
  if (!await confirmDialog(`Destroy ${app.id}?`, 'The app, its tasks and its versions are removed. This cannot be undone.', 'Destroy',
    () => call('DELETE', appPath(app.id)))) return;
  deployed('Destroying', app.id);
  if (after) after();
}

const ACTIONS = { Scale: scaleDialog, Restart: restart, Suspend: suspend, Destroy: destroy };

/** The action buttons of an app; their clicks are handled by `onAction` (one listener per list). */
function actionButtons(app) {
  const b = (label, cls = '') => h('button', { type: 'button', class: `btn btn-small ${cls}`, 'aria-label': `${label} ${app.id}`, 'data-action': label }, label);
  return h('div', { class: 'actions' }, b('Scale'), b('Restart'), b('Suspend'), b('Destroy', 'btn-danger'));
}

/** Handles a click on an action button inside `container`, for the app `appOf(button)`. */
function onActions(container, appOf, after) {
  container.addEventListener('click', (e) => {
    const button = e.target.closest('button[data-action]');
    if (!button || !container.contains(button)) return;
    const app = appOf(button);
    if (app) ACTIONS[button.dataset.action](app, after);
  });
}

function appRow(app, status) {
  return h('tr', { 'data-app': app.id },
    h('td', null, h('a', { href: appHref(app.id) }, app.id)),
    h('td', null, badge(status, stateKind(status))),
    h('td', { class: 'num running' }, `${app.tasksRunning || 0} / ${app.instances}`),
    h('td', null, healthBar(app)),
    h('td', { class: 'num' }, num(app.cpus)),
    h('td', { class: 'num' }, `${num(app.mem, 0)} MB`),
    h('td', null, actionButtons(app)));
}

/** Rows built per slice before the page gets the main thread back. */
const ROWS_PER_SLICE = 150;

export function list(root, _params, query) {
  const banner = errorBanner();
  const filter = h('input', { id: 'app-filter', type: 'search', placeholder: 'Filter by id', value: query.get('q') || '' });
  const tbody = h('tbody');
  const emptyRow = h('tr', null, h('td', { colspan: 7, class: 'muted' }, 'Loading…'));
  tbody.append(emptyRow);
  const count = h('p', { class: 'muted small' });
  const headers = ['App', 'Status', 'Running / instances', 'Health', 'CPUs', 'Memory', 'Actions'];
  replace(root,
    h('div', { class: 'toolbar' }, h('h1', null, 'Apps'), h('span', { class: 'spacer' }),
      h('label', { for: 'app-filter', class: 'sr-only' }, 'Filter apps by id'), filter,
      h('a', { class: 'btn btn-primary', href: '#/apps-new' }, 'Create app')),
    banner.el,
    h('div', { class: 'table-wrap' }, h('table', { class: 'apps' },
      h('caption', { class: 'sr-only' }, 'Apps'),
      h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' }, x)))), tbody)),
    count);
  // Rows are kept by app and rebuilt only when the app changed, so an
  // update of a large list touches only what moved.
  const rows = new Map();
  const apps = new Map();
  let last = null;
  let lastText = '';
  let drawing = 0;
  onActions(tbody, (button) => apps.get(button.closest('tr').dataset.app), () => p.now());
  const draw = () => {
    if (!last) return;
    const run = ++drawing;
    const [data, queue] = last;
    const q = filter.value.trim();
    const queued = new Map((queue.queue || []).map((x) => [x.app.id, x]));
    const shown = data.apps.filter((a) => !q || a.id.includes(q)).sort((a, b) => a.id.localeCompare(b.id));
    apps.clear();
    for (const a of data.apps) apps.set(a.id, a);
    for (const id of rows.keys()) if (!apps.has(id)) rows.delete(id);
    count.textContent = `${num(shown.length, 0)} of ${num(data.apps.length, 0)} apps.`;
    if (!shown.length) {
      emptyRow.firstChild.textContent = q ? 'No app matches.' : 'No apps yet: create one.';
      tbody.replaceChildren(emptyRow);
      firstRender('apps');
      return;
    }
    // Slices of rows, the first at once: the page shows the first screens
    // of a long list while the rest is built, and stays responsive.
    let i = 0;
    const slice = () => {
      if (run !== drawing) return;
      const end = Math.min(i + ROWS_PER_SLICE, shown.length);
      for (; i < end; i += 1) {
        const a = shown[i];
        const status = appStatus(a, queued);
        const key = `${status}|${JSON.stringify(a)}`;
        let r = rows.get(a.id);
        if (!r || r.key !== key) {
          r = { key, tr: appRow(a, status) };
          rows.set(a.id, r);
        }
        const at = tbody.children[i];
        if (at !== r.tr) tbody.insertBefore(r.tr, at || null);
      }
      if (i === ROWS_PER_SLICE || i === shown.length) firstRender('apps');
      if (i < shown.length) {
        setTimeout(slice, 0);
      } else {
        while (tbody.children.length > shown.length) tbody.lastChild.remove();
        if (!performance.getEntriesByName('agora:complete:apps').length) performance.mark('agora:complete:apps');
      }
    };
    slice();
  };
  filter.addEventListener('input', draw);
  const p = poll(async (signal) => {
    const [a, q] = await Promise.all([
      call('GET', `${API}/apps?embed=apps.counts&embed=apps.deployments`, undefined, { signal }),
      call('GET', `${API}/queue`, undefined, { signal }),
    ]);
    return [a.data, q.data];
  }, {
    everyMs: 2000,
    onData: (d) => {
      banner.clear();
      // Nothing to do when nothing changed.
      const text = JSON.stringify(d);
      if (text === lastText) return;
      lastText = text;
      last = d;
      draw();
    },
    onError: (e, retry) => banner.show(e, retry),
  });
  return () => { drawing += 1; p.stop(); };
}

function deploymentView(d, after) {
  const steps = d.steps || [];
  return h('section', { class: 'card', 'aria-label': `Deployment ${d.id}` },
    h('h3', null, 'Deployment ', h('code', null, d.id)),
    h('p', null, `Step ${d.currentStep} of ${d.totalSteps} `,
      h('progress', { max: String(d.totalSteps || 1), value: String(d.currentStep || 0), 'aria-label': `Deployment progress: step ${d.currentStep} of ${d.totalSteps}` })),
    h('ol', { class: 'steps' }, steps.map((s, i) => h('li', {
      class: i + 1 < d.currentStep ? 'done' : i + 1 === d.currentStep ? 'current' : null,
    }, (s.actions || []).map((a) => `${a.action} ${a.app}`).join(', ')))),
    h('div', { class: 'actions' },
      h('button', {
        type: 'button', class: 'btn btn-small', 'aria-label': `Roll back deployment ${d.id}`,
        onclick: async () => {
          if (!await confirmDialog('Roll back the deployment?', 'It is cancelled and a new deployment returns the apps to where they were.', 'Roll back',
            () => call('DELETE', `${API}/deployments/${encodeURIComponent(d.id)}`))) return;
          toast(`Rolling back deployment ${d.id}.`, 'ok');
          after();
        },
      }, 'Roll back'),
      h('button', {
        type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Stop deployment ${d.id} where it is`,
        onclick: async () => {
          if (!await confirmDialog('Stop the deployment where it is?', 'It is cancelled without a rollback: the apps stay as they are now.', 'Stop',
            () => call('DELETE', `${API}/deployments/${encodeURIComponent(d.id)}?force=true`))) return;
          toast(`Stopped deployment ${d.id}.`, 'ok');
          after();
        },
      }, 'Stop')));
}

function taskRows(app, after) {
  const kill = (t, scale) => async () => {
    const what = scale ? 'Kill and scale down' : 'Kill';
    if (!await confirmDialog(`${what} ${t.id}?`, scale
      ? `The task is killed and ${app.id} is scaled down by one, so it is not replaced.`
      : 'The task is killed; a new one replaces it.', what,
    () => call('DELETE', `${appPath(app.id)}/tasks/${encodeURIComponent(t.id)}?scale=${scale}`))) return;
    toast(`${scale ? 'Killed and scaled down' : 'Killed'}: ${t.id}.`, 'ok');
    after();
  };
  return (app.tasks || []).map((t) => h('tr', { 'data-task': t.id },
    h('td', null, h('code', null, t.id)),
    h('td', null, badge(state(t.state), stateKind(t.state))),
    h('td', null, t.host, (t.ports || []).length ? h('span', { class: 'muted' }, `:${t.ports.join(',')}`) : null),
    h('td', null, (t.healthCheckResults || []).length
      ? badge(t.healthCheckResults.every((r) => r.alive) ? 'healthy' : 'unhealthy', t.healthCheckResults.every((r) => r.alive) ? 'ok' : 'bad')
      : h('span', { class: 'muted' }, '–')),
    h('td', null, time(t.startedAt || t.stagedAt)),
    h('td', null, h('code', { class: 'small' }, t.version)),
    h('td', null, h('div', { class: 'actions' },
      logsLink(t.id, null),
      h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Kill task ${t.id}`, onclick: kill(t, false) }, 'Kill'),
      h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Kill task ${t.id} and scale down`, onclick: kill(t, true) }, 'Kill & scale')))));
}

function versionsView(app, versions, after) {
  const current = app.versionInfo && app.versionInfo.lastConfigChangeAt;
  return h('ol', { class: 'versions' }, versions.map((v) => {
    const details = h('details', null, h('summary', null, 'Show'));
    details.addEventListener('toggle', async () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = '1';
      try {
        const def = await get(`${appPath(app.id)}/versions/${encodeURIComponent(v)}`);
        details.append(h('pre', { class: 'json' }, JSON.stringify(def, null, 2)));
      } catch (e) {
        details.append(h('p', { class: 'error' }, `Cannot load this version: ${e.message}`));
      }
    });
    const isCurrent = v === current;
    return h('li', { 'data-version': v }, h('code', null, v), ' ', isCurrent ? badge('current configuration', 'ok') : null, ' ',
      isCurrent ? null : h('button', {
        type: 'button', class: 'btn btn-small', 'aria-label': `Apply version ${v}`,
        onclick: async () => {
          let result = null;
          if (!await confirmDialog('Apply this version?', `${app.id} is deployed again with its configuration of ${time(v)} (a rollback).`, 'Apply',
            async () => { result = (await call('PUT', `${appPath(app.id)}?force=false`, { version: v })).data; })) return;
          deployed('Rolling back', app.id, result);
          after();
        },
      }, 'Apply'), details);
  }));
}

export function app(root, [rest]) {
  const id = `/${rest}`;
  const banner = errorBanner();
  const head = h('div');
  const body = h('div');
  replace(root, h('p', null, h('a', { href: '#/apps' }, '← Apps')), banner.el, head, body);
  let versionsText = '';
  let current = null;
  const versionsBox = h('div');
  onActions(head, () => current, () => p.now());
  const p = poll(async (signal) => Promise.all([
    get(appPath(id), { signal }),
    get(`${API}/deployments`, { signal }),
    get(`${appPath(id)}/versions`, { signal }),
    get(`${API}/queue`, { signal }),
  ]), {
    everyMs: 1500,
    onData: ([{ app: a }, deployments, versions, queue]) => {
      banner.clear();
      const after = () => p.now();
      const queued = new Map((queue.queue || []).map((x) => [x.app.id, x]));
      const status = appStatus(a, queued);
      const c = a.container && a.container.docker;
      current = a;
      const appActions = actionButtons(a);
      replace(head,
        h('div', { class: 'toolbar' }, h('h1', null, a.id), h('span', { id: 'app-status' }, badge(status, stateKind(status))), h('span', { class: 'spacer' }),
          appActions,
          h('a', { class: 'btn btn-small', href: `${appHref(a.id)}/edit`, 'aria-label': `Edit ${a.id}` }, 'Edit')),
        h('dl', { class: 'kv' },
          h('dt', null, 'Running / instances'), h('dd', { id: 'app-running' }, `${a.tasksRunning || 0} / ${a.instances}`),
          h('dt', null, 'Health'), h('dd', { id: 'app-health' }, healthBar(a), ` ${a.tasksHealthy || 0} healthy, ${a.tasksUnhealthy || 0} unhealthy, ${a.tasksStaged || 0} staged`),
          h('dt', null, 'Command'), h('dd', null, a.cmd ? h('code', null, a.cmd) : (a.args || []).join(' ') || '–'),
          c ? [h('dt', null, 'Image'), h('dd', null, c.image)] : null,
          h('dt', null, 'Resources'), h('dd', null, `cpus ${num(a.cpus)}, mem ${num(a.mem, 0)} MB, disk ${num(a.disk, 0)} MB`),
          h('dt', null, 'Version'), h('dd', null, h('code', null, a.version)),
          h('dt', null, 'Configuration changed'), h('dd', null, time((a.versionInfo || {}).lastConfigChangeAt)),
          h('dt', null, 'Scaled'), h('dd', null, time((a.versionInfo || {}).lastScalingAt))));
      const mine = deployments.filter((d) => (d.affectedApps || []).includes(a.id));
      const failure = a.lastTaskFailure;
      const vText = JSON.stringify([versions, (a.versionInfo || {}).lastConfigChangeAt]);
      if (vText !== versionsText) {
        versionsText = vText;
        replace(versionsBox, versionsView(a, versions.versions || [], after));
      }
      replace(body,
        h('h2', null, 'Deployment'),
        mine.length ? mine.map((d) => deploymentView(d, after)) : h('p', { class: 'muted' }, 'No deployment in progress.'),
        h('h2', null, 'Tasks'),
        table('Tasks', ['Task', 'State', 'Host', 'Health', 'Started', 'Version', 'Actions'], taskRows(a, after),
          { empty: 'No tasks.', captionHidden: true }),
        h('h2', null, 'Last failure'),
        failure ? h('dl', { class: 'kv', id: 'last-failure' },
          h('dt', null, 'Task'), h('dd', null, h('code', null, failure.taskId), ' ', logsLink(failure.taskId, null)),
          h('dt', null, 'State'), h('dd', null, badge(state(failure.state), stateKind(failure.state))),
          h('dt', null, 'Message'), h('dd', null, failure.message || '–'),
          h('dt', null, 'Host'), h('dd', null, failure.host || '–'),
          h('dt', null, 'When'), h('dd', null, time(failure.timestamp), ` (${ago(failure.timestamp)})`),
          h('dt', null, 'Version'), h('dd', null, h('code', null, failure.version || '–')))
          : h('p', { class: 'muted' }, 'No task of this app has failed.'),
        h('h2', null, 'Configuration versions'),
        versionsBox);
      firstRender('app');
    },
    onError: (e, retry) => {
      if (e.status === 404 && !/agora-services/.test(e.message)) {
        replace(head, h('h1', null, id));
        replace(body, h('p', null, e.message, ' ', h('a', { href: '#/apps' }, 'Back to the apps'), '.'));
        return;
      }
      banner.show(e, retry);
    },
  });
  return () => p.stop();
}

const TEMPLATE = {
  id: '/my-app',
  cmd: 'python3 -m http.server $PORT0',
  cpus: 0.1,
  mem: 64,
  instances: 1,
  portDefinitions: [{ port: 0, name: 'http' }],
  healthChecks: [{ protocol: 'HTTP', path: '/', portIndex: 0, gracePeriodSeconds: 30, intervalSeconds: 10 }],
};

function editorPage(root, { title, initial, submit, submitLabel, back }) {
  const force = h('input', { id: 'edit-force', type: 'checkbox' });
  const form = jsonForm({
    label: 'App definition (JSON)', value: JSON.stringify(initial, null, 2), id: 'app-json', submitLabel, back,
    extra: submitLabel === 'Save' ? h('div', { class: 'check' }, force, h('label', { for: 'edit-force' }, 'Force (replace a deployment in progress)')) : null,
    submit: (def) => submit(def, force.checked),
  });
  replace(root, h('p', null, h('a', { href: back }, '← Back')), h('h1', null, title), form);
}

export function create(root) {
  editorPage(root, {
    title: 'Create an app', initial: TEMPLATE, submitLabel: 'Create', back: '#/apps',
    submit: async (def) => {
      const { data } = await call('POST', `${API}/apps`, def);
      toast(`Created ${data.id}.`, 'ok');
      location.hash = appHref(data.id);
    },
  });
}

export function edit(root, [rest]) {
  const id = `/${rest}`;
  replace(root, h('p', { class: 'muted' }, 'Loading…'));
  get(appPath(id)).then(({ app: a }) => {
    const def = { ...a };
    for (const k of READ_ONLY) delete def[k];
    editorPage(root, {
      title: `Edit ${id}`, initial: def, submitLabel: 'Save', back: appHref(id),
      submit: async (changed, force) => {
        const { data } = await call('PUT', `${appPath(id)}?force=${force}`, changed);
        deployed('Deploying', id, data);
        location.hash = appHref(id);
      },
    });
  }).catch((e) => {
    replace(root, h('h1', null, `Edit ${id}`), h('div', { class: 'banner', role: 'alert' }, `Cannot load the app: ${e.message}`));
  });
}
