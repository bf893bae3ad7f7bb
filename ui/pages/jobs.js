// Jobs (the batch framework, through the master's proxy at /batch): the
// list with schedules, next and last runs; a job with its runs; a run with
// its attempts and logs. Every action is the batch REST API's call.
import { h, replace, table, badge, toast, firstRender } from '../lib/dom.js';
import { call, get, seg } from '../lib/api.js';
import { poll } from '../lib/poll.js';
import { confirmDialog } from '../lib/dialog.js';
import { time, ago, duration, between, num, stateKind, state } from '../lib/format.js';
import { logViewer } from './tasks.js';
import { jsonForm } from '../lib/jsonedit.js';

const API = '/batch/v1';
const ENDED = ['SUCCESS', 'FAILED', 'MISSED', 'SKIPPED'];

/** An error banner that clears itself once the API answers again. */
function errorBanner() {
  const el = h('div', { class: 'error', role: 'alert' });
  return {
    el,
    show(e, retry) {
      replace(el, h('p', null, e.status === 404 && /agora-batch/.test(e.message)
        ? `The batch framework is not running: ${e.message}`
        : `The batch API did not answer: ${e.message}`,
      retry ? ` Retrying in ${Math.round(retry / 1000)} s.` : ''));
    },
    clear() { el.replaceChildren(); },
  };
}

async function runNow(jobId, after) {
  try {
    const { data } = await call('POST', `${API}/jobs/${seg(jobId)}/runs`);
    const t = toast(`Started run ${data.id} of ${jobId}.`, 'ok');
    t.querySelector('span').append(' ', h('a', { href: `#/jobs/${seg(jobId)}/runs/${seg(data.id)}` }, 'Open'));
    if (after) after();
  } catch (e) {
    toast(`Cannot start a run of ${jobId}: ${e.message}`, 'error');
  }
}

function runNowButton(jobId, after) {
  return h('button', { type: 'button', class: 'btn btn-primary btn-small', 'aria-label': `Run ${jobId} now`, onclick: () => runNow(jobId, after) }, 'Run now');
}

function nextRun(job) {
  const times = (job.schedules || []).filter((s) => s.enabled && s.nextRunAt).map((s) => s.nextRunAt).sort();
  return times.length ? h('span', { title: time(times[0]) }, ago(times[0])) : h('span', { class: 'muted' }, '–');
}

function scheduleText(job) {
  const s = job.schedules || [];
  if (s.length) {
    return s.map((x) => h('div', null, h('code', null, x.cron), ` ${x.timezone}`, x.enabled ? '' : h('span', { class: 'muted' }, ' (disabled)')));
  }
  if ((job.dependencies || []).length) return `after ${job.dependencies.map((d) => d.id).join(', ')}`;
  return h('span', { class: 'muted' }, 'on demand');
}

/** The last run's status from the summary (ACTIVE when one runs). */
function lastRun(job) {
  if ((job.activeRuns || []).length) {
    const r = job.activeRuns[0];
    return h('a', { href: `#/jobs/${seg(job.id)}/runs/${seg(r.id)}` }, badge(r.status, stateKind(r.status)));
  }
  const h_ = job.historySummary || {};
  const ok = h_.lastSuccessAt;
  const bad = h_.lastFailureAt;
  if (!ok && !bad) return h('span', { class: 'muted' }, 'never ran');
  const failed = bad && (!ok || bad > ok);
  return h('span', null, badge(failed ? 'FAILED' : 'SUCCESS', failed ? 'bad' : 'ok'), ' ',
    h('span', { class: 'muted small', title: time(failed ? bad : ok) }, ago(failed ? bad : ok)));
}

export function list(root) {
  const banner = errorBanner();
  const box = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  replace(root, h('div', { class: 'toolbar' }, h('h1', null, 'Jobs'), h('span', { class: 'spacer' }),
    h('a', { class: 'btn btn-primary', href: '#/jobs-new' }, 'Create job')), banner.el, box);
  const p = poll((signal) => get(`${API}/jobs?embed=activeRuns,schedules,historySummary`, { signal }), {
    everyMs: 2000,
    onData: (jobs) => {
      banner.clear();
      jobs.sort((a, b) => a.id.localeCompare(b.id));
      replace(box, table('Jobs', ['Job', 'Schedule', 'Next run', 'Last run', 'Runs (ok / failed)', ''],
        jobs.map((j) => h('tr', null,
          h('td', null, h('a', { href: `#/jobs/${seg(j.id)}` }, j.id), j.description ? h('div', { class: 'muted small' }, j.description) : null),
          h('td', null, scheduleText(j)),
          h('td', null, nextRun(j)),
          h('td', null, lastRun(j)),
          h('td', { class: 'num' }, `${num((j.historySummary || {}).successCount || 0, 0)} / ${num((j.historySummary || {}).failureCount || 0, 0)}`),
          h('td', null, runNowButton(j.id, () => p.now())))),
        { empty: 'No jobs yet: create one here, with `agora jobs create`, or POST /v1/jobs.', captionHidden: true }));
      firstRender('jobs');
    },
    onError: (e, retry) => banner.show(e, retry),
  });
  return () => p.stop();
}

function runRows(jobId, runs, after) {
  return runs.map((r) => {
    const active = !ENDED.includes(r.status);
    const took = between(r.startedAt || r.createdAt, r.completedAt);
    return h('tr', null,
      h('td', null, h('a', { href: `#/jobs/${seg(jobId)}/runs/${seg(r.id)}` }, r.id)),
      h('td', null, badge(r.status, stateKind(r.status))),
      h('td', null, (r.trigger || {}).kind || '–'),
      h('td', null, time(r.createdAt)),
      h('td', { class: 'num' }, took === null ? (active ? 'running' : '–') : duration(took)),
      h('td', { class: 'num' }, r.exitCode === undefined || r.exitCode === null ? '–' : String(r.exitCode)),
      h('td', { class: 'num' }, num((r.tasks || []).length, 0)),
      h('td', { class: 'msg' }, r.reason || ''),
      h('td', null, active ? h('button', {
        type: 'button', class: 'btn btn-small', 'aria-label': `Stop run ${r.id}`,
        onclick: async () => {
          if (!await confirmDialog('Stop the run?', `Run ${r.id} of ${jobId} is killed and ends FAILED.`, 'Stop run',
            () => call('POST', `${API}/jobs/${seg(jobId)}/runs/${seg(r.id)}/actions/stop`))) return;
          toast(`Stopping run ${r.id}.`, 'ok');
          after();
        },
      }, 'Stop') : null));
  });
}

export function job(root, [id]) {
  const banner = errorBanner();
  const head = h('div');
  const runsBox = h('div');
  replace(root, h('p', null, h('a', { href: '#/jobs' }, '← Jobs')), banner.el, head, h('h2', null, 'Runs'), runsBox);
  const p = poll(async (signal) => Promise.all([
    get(`${API}/jobs/${seg(id)}?embed=schedules,activeRuns,historySummary`, { signal }),
    get(`${API}/jobs/${seg(id)}/runs`, { signal }),
  ]), {
    everyMs: 2000,
    onData: ([j, runs]) => {
      banner.clear();
      const r = j.run || {};
      replace(head,
        h('div', { class: 'toolbar' }, h('h1', null, j.id), h('span', { class: 'spacer' }),
          runNowButton(j.id, () => p.now()),
          h('button', {
            type: 'button', class: 'btn btn-danger btn-small', 'aria-label': `Delete job ${j.id}`,
            onclick: async () => {
              if (!await confirmDialog(`Delete job ${j.id}?`, 'The job, its schedules and its run history are removed; active runs are stopped.',
                'Delete job', () => call('DELETE', `${API}/jobs/${seg(j.id)}?stopCurrentJobRuns=true`))) return;
              toast(`Deleted job ${j.id}.`, 'ok');
              location.hash = '#/jobs';
            },
          }, 'Delete')),
        j.description ? h('p', null, j.description) : null,
        h('dl', { class: 'kv' },
          h('dt', null, 'Command'), h('dd', null, h('code', null, r.cmd || (r.args || []).join(' ') || '–')),
          r.docker ? [h('dt', null, 'Image'), h('dd', null, r.docker.image)] : null,
          h('dt', null, 'Resources'), h('dd', null, `cpus ${num(r.cpus)}, mem ${num(r.mem, 0)} MB, disk ${num(r.disk, 0)} MB`),
          h('dt', null, 'Restart'), h('dd', null, (r.restart || {}).policy || 'NEVER',
            (r.restart || {}).activeDeadlineSeconds ? `, deadline ${r.restart.activeDeadlineSeconds} s` : ''),
          h('dt', null, 'Schedule'), h('dd', null, scheduleText(j)),
          h('dt', null, 'Next run'), h('dd', null, nextRun(j)),
          h('dt', null, 'Last run'), h('dd', null, lastRun(j))));
      replace(runsBox, table('Runs', ['Run', 'Status', 'Trigger', 'Created', 'Duration', 'Exit code', 'Attempts', 'Reason', ''],
        runRows(j.id, runs, () => p.now()), { empty: 'No runs yet.', captionHidden: true }));
    },
    onError: (e, retry) => banner.show(e, retry),
  });
  return () => p.stop();
}

export function run(root, [jobId, runId]) {
  const banner = errorBanner();
  const head = h('div');
  const attemptsBox = h('div');
  const logsBox = h('div');
  replace(root, h('p', null, h('a', { href: `#/jobs/${seg(jobId)}` }, `← ${jobId}`)), banner.el, head,
    h('h2', null, 'Attempts'), attemptsBox, h('h2', null, 'Logs'), logsBox);
  let viewer = null;
  let shownTask = null;
  const p = poll((signal) => get(`${API}/jobs/${seg(jobId)}/runs/${seg(runId)}`, { signal }), {
    everyMs: 1500,
    onData: (r) => {
      banner.clear();
      const took = between(r.startedAt || r.createdAt, r.completedAt);
      replace(head,
        h('h1', null, 'Run ', h('code', null, r.id), ' ', h('span', { id: 'run-status' }, badge(r.status, stateKind(r.status)))),
        h('dl', { class: 'kv' },
          h('dt', null, 'Job'), h('dd', null, h('a', { href: `#/jobs/${seg(jobId)}` }, jobId)),
          h('dt', null, 'Trigger'), h('dd', null, (r.trigger || {}).kind || '–'),
          h('dt', null, 'Scheduled for'), h('dd', null, time(r.scheduledAt)),
          h('dt', null, 'Started'), h('dd', null, time(r.startedAt)),
          h('dt', null, 'Finished'), h('dd', null, time(r.completedAt)),
          h('dt', null, 'Duration'), h('dd', null, took === null ? '–' : duration(took)),
          h('dt', null, 'Exit code'), h('dd', { id: 'run-exit-code' }, r.exitCode === undefined || r.exitCode === null ? '–' : String(r.exitCode)),
          r.reason ? [h('dt', null, 'Reason'), h('dd', null, r.reason)] : null));
      const attempts = r.tasks || [];
      replace(attemptsBox, table('Attempts', ['#', 'Task', 'State', 'Host', 'Started', 'Finished', 'Exit code', 'Message'],
        attempts.map((a) => h('tr', null,
          h('td', { class: 'num' }, String(a.attempt)),
          h('td', null, h('code', null, a.id)),
          h('td', null, badge(state(a.status), stateKind(a.status))),
          h('td', null, a.host || '–'),
          h('td', null, time(a.startedAt || a.launchedAt)),
          h('td', null, time(a.completedAt)),
          h('td', { class: 'num' }, a.exitCode === undefined || a.exitCode === null ? '–' : String(a.exitCode)),
          h('td', { class: 'msg' }, a.message || ''))),
        { empty: 'Not launched yet.', captionHidden: true }));
      const last = attempts[attempts.length - 1];
      if (last && last.id !== shownTask) {
        if (viewer) viewer.stop();
        shownTask = last.id;
        viewer = logViewer(`/tasks/${seg(last.id)}/logs`, `Attempt ${last.attempt}`);
        replace(logsBox, h('p', { class: 'muted' }, `Attempt ${last.attempt}, task `, h('code', null, last.id)), viewer.el);
      } else if (!last) {
        replace(logsBox, h('p', { class: 'muted' }, 'No output yet: the run has not launched a task.'));
      }
    },
    onError: (e, retry) => banner.show(e, retry),
  });
  return () => { p.stop(); if (viewer) viewer.stop(); };
}

const TEMPLATE = {
  id: 'nightly-report',
  description: 'What the job does',
  run: { cmd: 'echo hello', cpus: 0.1, mem: 32, restart: { policy: 'NEVER' } },
  schedules: [{ id: 'nightly', cron: '0 2 * * *', timezone: 'UTC', concurrencyPolicy: 'FORBID' }],
};

/** Create a job from its JSON definition (`POST /v1/jobs`, schedules included). */
export function create(root) {
  const form = jsonForm({
    label: 'Job definition (JSON)', value: JSON.stringify(TEMPLATE, null, 2), id: 'job-json', submitLabel: 'Create', back: '#/jobs',
    submit: async (def) => {
      const { data } = await call('POST', `${API}/jobs`, def);
      toast(`Created job ${data.id}.`, 'ok');
      location.hash = `#/jobs/${seg(data.id)}`;
    },
  });
  replace(root, h('p', null, h('a', { href: '#/jobs' }, '← Jobs')), h('h1', null, 'Create a job'), form);
}
