// Small DOM helpers: elements, messages, confirmation, formats.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function say(text, kind = 'info', problems = []) {
  const box = document.getElementById('status');
  box.replaceChildren(h('div', { class: `msg ${kind}` }, text,
    problems.length ? h('ul', {}, problems.map((p) => h('li', {}, p))) : null));
}

export function sayError(err) { say(err.message || String(err), 'error', err.problems || []); }
export function clearSay() { document.getElementById('status').replaceChildren(); }

// A modal question with real buttons (keyboard: Tab between them, Escape cancels).
export function confirmAction(question, yes = 'Confirm') {
  return new Promise((resolve) => {
    const dlg = h('dialog', { 'aria-labelledby': 'dlg-q' },
      h('p', { id: 'dlg-q' }, question),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'danger', onclick: () => dlg.close('yes') }, yes),
        h('button', { type: 'button', class: 'secondary', onclick: () => dlg.close('no') }, 'Cancel')));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'yes'); });
    document.body.append(dlg);
    dlg.showModal();
    dlg.querySelector('button.secondary').focus();
  });
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function stateBadge(status) { return h('span', { class: `state ${status}` }, status); }

// Run an async action from a button: disabled meanwhile, its error shown.
export async function busy(button, fn) {
  if (button) button.disabled = true;
  try { return await fn(); } catch (e) { sayError(e); return undefined; } finally { if (button) button.disabled = false; }
}
