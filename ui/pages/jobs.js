import { h, replace } from '../lib/dom.js';
export function list(root) { replace(root, h('h1', null, 'Jobs')); }
export function job(root) { replace(root, h('h1', null, 'Job')); }
export function run(root) { replace(root, h('h1', null, 'Run')); }
