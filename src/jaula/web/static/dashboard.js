// The dashboard: host capacity and commitment, every instance with cpu and memory sparklines,
// and the recent events as they arrive.
import { events, get } from './api.js';
import { line, Sampler } from './charts.js';
import { bytes, h, sayError, stateBadge } from './dom.js';

function capacity(host) {
  const row = (what, used, committed, allowed, physical, fmt) => h('div', {},
    h('h3', {}, what),
    h('dl', { class: 'kv' },
      h('dt', {}, 'physical'), h('dd', { 'data-host': `${what}-physical` }, fmt(physical)),
      h('dt', {}, 'in use'), h('dd', {}, fmt(used)),
      h('dt', {}, 'committed'), h('dd', { 'data-host': `${what}-committed` }, `${fmt(committed)} of ${fmt(allowed)} allowed`)),
    h('meter', { min: 0, max: allowed || 1, value: committed, 'aria-label': `${what} committed of allowed` }));
  return h('section', { class: 'card', 'aria-labelledby': 'cap-h' },
    h('h2', { id: 'cap-h' }, 'Host capacity'),
    h('div', { class: 'grid' },
      row('cpu', host.used.cpu.toFixed(2) + ' (load)', host.committed.cpu, host.allowed.cpu, host.physical.cpu, (v) => (typeof v === 'number' ? `${v} cpus` : v)),
      row('memory', host.used.memory, host.committed.memory, host.allowed.memory, host.physical.memory, bytes)),
    h('p', { class: 'muted' }, `${host.committed.instances} running or frozen instance(s); overcommit memory ×${host.overcommit['overcommit.memory']}, cpu ×${host.overcommit['overcommit.cpu']}`));
}

export function dashboard(main) {
  const samplers = new Map();
  const capBox = h('div');
  const tbody = h('tbody');
  const evList = h('ul', { class: 'events', 'aria-label': 'Recent events', id: 'events' });
  main.replaceChildren(h('h1', {}, 'Dashboard'), capBox,
    h('section', { class: 'card', 'aria-labelledby': 'inst-h' },
      h('div', { class: 'actions', style: 'justify-content:space-between' },
        h('h2', { id: 'inst-h' }, 'Instances'), h('a', { href: '#/create', class: 'button' }, 'Create instance')),
      h('div', { class: 'scroll' }, h('table', { id: 'instances' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'State'), h('th', {}, 'CPU'),
          h('th', {}, 'Memory'), h('th', { class: 'wide' }, 'Template'))), tbody))),
    h('section', { class: 'card', 'aria-labelledby': 'ev-h' }, h('h2', { id: 'ev-h' }, 'Recent events'), evList));

  let instances = [];
  // Rows are updated in place (a link keeps the keyboard's focus across refreshes).
  const rows = new Map();
  const render = () => {
    for (const [name, tr] of rows) if (!instances.find((i) => i.name === name)) { tr.remove(); rows.delete(name); }
    const empty = tbody.querySelector('tr.empty');
    if (empty && instances.length) empty.remove();
    for (const i of instances) {
      let tr = rows.get(i.name);
      if (!tr) {
        tr = h('tr', { 'data-instance': i.name },
          h('td', {}, h('a', { href: `#/instances/${encodeURIComponent(i.name)}` }, i.name)),
          h('td', { class: 'st' }), h('td', { class: 'cpu' }), h('td', { class: 'mem' }), h('td', { class: 'wide' }, i.template));
        rows.set(i.name, tr);
        tbody.append(tr);
      }
      const s = samplers.get(i.name);
      const cpu = s ? s.series.cpu : [];
      const mem = s ? s.series.memory : [];
      tr.querySelector('.st').replaceChildren(stateBadge(i.status));
      tr.querySelector('.cpu').replaceChildren(line(cpu, { label: `cpu of ${i.name}` }),
        h('span', { class: 'muted' }, cpu.length ? `${cpu[cpu.length - 1].toFixed(1)} %` : ''));
      tr.querySelector('.mem').replaceChildren(line(mem, { limit: s ? s.limit('memory') : null, label: `memory of ${i.name}` }),
        h('span', { class: 'muted' }, mem.length ? bytes(mem[mem.length - 1]) : ''));
    }
    if (!instances.length && !tbody.querySelector('tr.empty')) tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: 5 }, 'No instance yet: create one.')));
  };
  const refresh = async () => {
    try {
      const [host, list] = await Promise.all([get('/1.0/host'), get('/1.0/instances')]);
      capBox.replaceChildren(capacity(host));
      instances = list;
      for (const name of samplers.keys()) if (!list.find((i) => i.name === name && i.status !== 'stopped')) samplers.delete(name);
      await Promise.all(list.filter((i) => i.status === 'running' || i.status === 'frozen').map((i) => {
        if (!samplers.has(i.name)) samplers.set(i.name, new Sampler(i.name, 40));
        return samplers.get(i.name).sample().catch(() => {});
      }));
      render();
    } catch (e) { sayError(e); }
  };
  refresh();
  const timer = setInterval(refresh, 2000);
  const seen = new Set();
  const show = (ev) => {
    const m = ev.metadata || {};
    if (ev.type === 'lifecycle' && m.id !== undefined) { if (seen.has(m.id)) return; seen.add(m.id); }
    const text = ev.type === 'lifecycle' ? `${m.action} ${m.context && m.context.name ? m.context.name : ''}`
      : `${m.description}: ${m.status}${m.err ? ` (${m.err})` : ''}`;
    evList.prepend(h('li', {}, h('time', { class: 'muted' }, new Date(ev.timestamp).toLocaleTimeString()), ' ', text));
    while (evList.children.length > 50) evList.lastChild.remove();
  };
  (async () => {  // the stored lifecycle events first (pages of 1000, oldest first): the last 20 shown
    let after = 0;
    let last = [];
    for (let i = 0; i < 20; i += 1) {
      const page = await get(`/1.0/events/history?after=${after}&timeout=0`);
      if (!page.length) break;
      last = last.concat(page).slice(-20);
      after = page[page.length - 1].id;
      if (page.length < 1000) break;
    }
    last.forEach((e) => show({ type: 'lifecycle', timestamp: e.time, metadata: { id: e.id, action: e.type, context: e.payload } }));
  })().catch(() => {});
  const stop = events('lifecycle,operation', (ev) => {
    show(ev);
    if (ev.type === 'lifecycle') refresh();
  });
  return () => { clearInterval(timer); stop(); };
}
