// The API through the session: the cookie goes by itself; every state-changing request carries
// the session's CSRF token in X-Jaula-CSRF (the bearer token never reaches this page).
let csrf = null;
let onUnauthorized = () => {};

export function setCsrf(token) { csrf = token; }
export function whenUnauthorized(fn) { onUnauthorized = fn; }

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.problems = (body && body.problems) || [];
  }
}

export async function request(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (!['GET', 'HEAD'].includes(method)) opts.headers['X-Jaula-CSRF'] = csrf || '';
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (!resp.ok) {
    if (resp.status === 401 && path.startsWith('/1.0')) onUnauthorized();
    throw new ApiError(resp.status, data);
  }
  return data;
}

export async function get(path) { return (await request('GET', path)).metadata; }
export async function send(method, path, body) { return request(method, path, body); }

// An async action: the operation it made, waited for; a failed one throws its error.
export async function act(method, path, body, onProgress) {
  const r = await request(method, path, body);
  if (r.type !== 'async') return r.metadata;
  return waitFor(r.metadata.id, onProgress);
}

export async function waitFor(id, onProgress) {
  for (;;) {
    const op = onProgress ? await get(`/1.0/operations/${id}`) : await get(`/1.0/operations/${id}/wait?timeout=30`);
    if (onProgress) onProgress(op);
    if (op.status === 'success') return op;
    if (op.status === 'failure' || op.status === 'cancelled') throw new ApiError(500, { error: op.err || op.status });
    if (onProgress) await new Promise((r) => setTimeout(r, 300));
  }
}

// The live event stream (NDJSON): calls onEvent for each; reconnects after a pause when it ends.
export function events(types, onEvent) {
  const ctrl = new AbortController();
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        const resp = await fetch(`/1.0/events?type=${types}`, { signal: ctrl.signal, credentials: 'same-origin' });
        if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line) { try { onEvent(JSON.parse(line)); } catch (e) { console.warn(e); } }
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      await new Promise((r) => setTimeout(r, 3000));
    }
  })();
  return () => { stopped = true; ctrl.abort(); };
}
