// A JSON editor for app and job definitions: a textarea, a syntax check as you
// type, and the API's validation errors shown at their fields: each error
// names its field (`/cpus`), is linked to the editor, and selects that
// field's key in the JSON when activated.
import { h, replace } from './dom.js';

/** Finds where the field at JSON pointer `path` starts in `text` (best effort). */
export function locate(text, path) {
  const parts = path.split('/').filter(Boolean);
  let from = 0;
  let found = null;
  for (const p of parts) {
    if (/^\d+$/.test(p)) continue; // array indexes: keep searching inside
    const key = `"${p.replace(/~1/g, '/').replace(/~0/g, '~')}"`;
    const at = text.indexOf(key, from);
    if (at < 0) break;
    found = [at, at + key.length];
    from = at + key.length;
  }
  return found;
}

export function jsonEditor({ label, value, id = 'app-json' }) {
  const errId = `${id}-errors`;
  const area = h('textarea', {
    id, rows: 22, spellcheck: 'false', autocomplete: 'off', 'aria-describedby': errId,
  });
  area.value = value;
  const syntax = h('p', { class: 'field-error', id: `${id}-syntax`, role: 'status' });
  const errors = h('ul', { class: 'field-errors', id: errId, 'aria-live': 'polite' });
  const field = h('div', { class: 'field' }, h('label', { for: id }, label), area, syntax, errors);
  area.addEventListener('input', () => {
    try {
      JSON.parse(area.value);
      syntax.textContent = '';
    } catch (e) {
      syntax.textContent = `Not valid JSON yet: ${e.message}`;
    }
  });
  return {
    el: field,
    text: () => area.value,
    /** Parsed JSON, or throws with a message naming the problem. */
    json() {
      try {
        return JSON.parse(area.value);
      } catch (e) {
        throw new Error(`The definition is not valid JSON: ${e.message}`);
      }
    },
    /** Shows validation details [{path, errors}] at their fields (or clears). */
    showErrors(details) {
      const list = details || [];
      field.classList.toggle('field-invalid', list.length > 0);
      area.setAttribute('aria-invalid', list.length ? 'true' : 'false');
      replace(errors, list.map((d) => {
        const path = d.path || '/';
        const jump = h('button', {
          type: 'button', class: 'link', 'data-field': path,
          'aria-label': `Go to field ${path} in the definition`,
        }, h('code', null, path));
        jump.addEventListener('click', () => {
          const at = locate(area.value, path);
          area.focus();
          if (at) area.setSelectionRange(at[0], at[1]);
        });
        return h('li', { class: 'field-error', 'data-field-error': path }, jump, ': ', (d.errors || []).join('; '));
      }));
      if (list.length) {
        const at = locate(area.value, list[0].path || '/');
        if (at) area.setSelectionRange(at[0], at[1]);
      }
    },
  };
}

/**
 * A form around a JSON editor: submitting parses the JSON, calls
 * `submit(definition)` and shows what went wrong (the API's validation
 * errors at their fields, the message in a banner). `extra` goes between
 * the editor and the buttons.
 */
export function jsonForm({ label, value, id, submitLabel, back, extra = null, submit }) {
  const editor = jsonEditor({ label, value, id });
  const error = h('div', { role: 'alert' });
  const button = h('button', { type: 'submit', class: 'btn btn-primary' }, submitLabel);
  const form = h('form', { novalidate: true }, editor.el, extra, error,
    h('div', { class: 'actions' }, button, h('a', { class: 'btn', href: back }, 'Cancel')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(error);
    editor.showErrors([]);
    let def;
    try {
      def = editor.json();
    } catch (err) {
      replace(error, h('div', { class: 'banner' }, err.message));
      return;
    }
    button.disabled = true;
    try {
      await submit(def);
    } catch (err) {
      if (err.details && err.details.length) editor.showErrors(err.details);
      replace(error, h('div', { class: 'banner' }, err.message,
        err.details && err.details.length ? ` (${err.details.length} field${err.details.length > 1 ? 's' : ''}: see above)` : ''));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
