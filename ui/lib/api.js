// Every call the UI makes is a documented REST call of the master or of a
// framework (through the master's proxy: /services/..., /batch/...). Errors
// carry the API's own message and, for validation errors, its field details.

export class ApiError extends Error {
  constructor(status, message, details, body) {
    super(message);
    this.status = status;
    this.details = details || [];
    this.body = body;
  }
}

/** Calls the API; resolves to {data, headers, status} or throws ApiError. */
export async function call(method, path, body, opts = {}) {
  const init = { method, headers: { Accept: 'application/json' }, signal: opts.signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `Cannot reach the master (${e.message}). Is it running?`);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!resp.ok) {
    let message = (data && typeof data === 'object' && data.message)
      || (typeof data === 'string' && data.length < 300 && !data.startsWith('<') && data)
      || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, message, data && data.details, data);
  }
  return { data, headers: resp.headers, status: resp.status };
}

export const get = (path, opts) => call('GET', path, undefined, opts).then((r) => r.data);

/** Encodes one path segment (an id). */
export const seg = (s) => encodeURIComponent(s);
