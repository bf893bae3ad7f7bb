// Agora's web UI: a hash router over the pages. Each page is a function
// (root, params, query) that renders into `root` and returns a cleanup
// function (or nothing).
import { h, replace } from './lib/dom.js';
import * as live from './lib/live.js';
import * as cluster from './pages/cluster.js';
import * as tasks from './pages/tasks.js';
import * as jobs from './pages/jobs.js';
import * as apps from './pages/apps.js';

const routes = [
  [/^$/, cluster.dashboard, 'cluster'],
  [/^agents$/, cluster.agents, 'agents'],
  [/^agents\/([^/]+)$/, cluster.agent, 'agents'],
  [/^frameworks$/, cluster.frameworks, 'frameworks'],
  [/^frameworks\/([^/]+)$/, cluster.framework, 'frameworks'],
  [/^offers$/, cluster.offers, 'offers'],
  [/^tasks$/, tasks.list, 'tasks'],
  [/^tasks\/([^/]+)\/logs$/, tasks.logs, 'tasks'],
  [/^jobs$/, jobs.list, 'jobs'],
  [/^jobs-new$/, jobs.create, 'jobs'],
  [/^jobs\/([^/]+)$/, jobs.job, 'jobs'],
  [/^jobs\/([^/]+)\/runs\/([^/]+)$/, jobs.run, 'jobs'],
  [/^apps$/, apps.list, 'apps'],
  [/^apps-new$/, apps.create, 'apps'],
  [/^apps\/(.+)\/edit$/, apps.edit, 'apps'],
  [/^apps\/(.+)$/, apps.app, 'apps'],
];

let cleanup = null;

function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const query = new URLSearchParams(qs || '');
  const view = document.getElementById('view');
  if (cleanup) {
    try { cleanup(); } catch (e) { console.error(e); }
    cleanup = null;
  }
  let found = null;
  for (const [re, page, nav] of routes) {
    const m = path.match(re);
    if (m) {
      found = [page, m.slice(1).map(decodeURIComponent), nav];
      break;
    }
  }
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    if (found && a.dataset.nav === found[2]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    replace(view, h('h1', null, 'Not found'), h('p', null, 'There is no page at ', h('code', null, `#/${path}`), '. ',
      h('a', { href: '#/' }, 'Back to the cluster'), '.'));
    return;
  }
  const [page, params] = found;
  replace(view);
  cleanup = page(view, params, query) || null;
}

window.addEventListener('hashchange', route);
function boot() {
  live.start();
  route();
}
if (document.readyState === 'loading') window.addEventListener('DOMContentLoaded', boot);
else boot();
