// Modal dialogs on <dialog>: confirmations and small forms. Each resolves
// to the user's answer (null when cancelled) and keeps the dialog open on
// an API error, showing it, until the action succeeds or is cancelled.
import { h } from './dom.js';

/**
 * Opens a dialog. `body` is a node (form fields); `action(form)` runs on
 * submit and may throw (its message is shown in the dialog).
 */
export function dialog({ title, body, confirm = 'OK', danger = false, action }) {
  return new Promise((resolve) => {
    const error = h('p', { class: 'form-error', role: 'alert' });
    const cancel = h('button', { type: 'button', class: 'btn' }, 'Cancel');
    const ok = h('button', { type: 'submit', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}` }, confirm);
    const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
    const form = h('form', { method: 'dialog' },
      h('h2', { id: titleId }, title), body || null, error,
      h('div', { class: 'dialog-actions' }, cancel, ok));
    const dlg = h('dialog', { 'aria-labelledby': titleId }, form);
    document.body.append(dlg);
    let done = false;
    const finish = (v) => {
      if (done) return;
      done = true;
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    cancel.addEventListener('click', () => finish(null));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); finish(null); });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      error.textContent = '';
      ok.disabled = true;
      try {
        const result = action ? await action(form) : true;
        finish(result === undefined ? true : result);
      } catch (err) {
        error.textContent = err.message || String(err);
        ok.disabled = false;
      }
    });
    dlg.showModal();
    const first = form.querySelector('input, textarea, select');
    (first || ok).focus();
  });
}

/** Asks to confirm a destructive action; resolves true/false. */
export async function confirmDialog(title, message, confirm, action) {
  const r = await dialog({ title, body: h('p', null, message), confirm, danger: true, action });
  return r !== null;
}
