import { h, replace } from '../lib/dom.js';
export function list(root) { replace(root, h('h1', null, 'Apps')); }
export function app(root) { replace(root, h('h1', null, 'App')); }
export function create(root) { replace(root, h('h1', null, 'New app')); }
export function edit(root) { replace(root, h('h1', null, 'Edit app')); }
