// The create form, the templates (list, build with progress, import) and the networks.
import { act, get, request } from './api.js';
import { busy, bytes, h, say } from './dom.js';

const field = (id, label, input, hint) => h('label', { for: id }, label, input, hint ? h('span', { class: 'muted' }, hint) : null);

export function createPage(main) {
  const name = h('input', { id: 'c-name', name: 'name', required: true, autocomplete: 'off', placeholder: 'web1' });
  const template = h('select', { id: 'c-template', name: 'template', required: true });
  const memory = h('input', { id: 'c-memory', name: 'memory', placeholder: '256MiB', autocomplete: 'off' });
  const cpu = h('input', { id: 'c-cpu', name: 'cpu', placeholder: '1', inputmode: 'decimal', autocomplete: 'off' });
  const procs = h('input', { id: 'c-procs', name: 'processes', placeholder: '500', inputmode: 'numeric', autocomplete: 'off' });
  const network = h('select', { id: 'c-network', name: 'network' }, h('option', { value: 'default' }, 'default'));
  const profiles = h('fieldset', {}, h('legend', {}, 'Profiles'));
  const start = h('input', { id: 'c-start', type: 'checkbox', checked: true });
  const submit = h('button', { type: 'submit' }, 'Create');
  const form = h('form', { class: 'stack card', id: 'create-form' },
    field('c-name', 'Name', name, 'a DNS label: letters, digits, -'),
    field('c-template', 'Template', template), profiles,
    h('fieldset', {}, h('legend', {}, 'Limits (empty: none)'),
      h('div', { class: 'grid' }, field('c-memory', 'Memory', memory), field('c-cpu', 'CPUs', cpu), field('c-procs', 'Processes', procs))),
    field('c-network', 'Network (eth0)', network),
    h('label', { class: 'check', for: 'c-start' }, start, 'Start it once created'), submit);
  main.replaceChildren(h('h1', {}, 'Create an instance'), form);
  (async () => {
    const [templates, nets, profs] = await Promise.all([get('/1.0/templates'), get('/1.0/networks'), get('/1.0/profiles')]);
    template.replaceChildren(...templates.map((t) => h('option', { value: t.name }, `${t.name} (${t.os} ${t.os_version})`)));
    if (!templates.length) template.append(h('option', { value: 'busybox' }, 'busybox (built on first use)'));
    network.append(...nets.filter((n) => n.name !== 'default').map((n) => h('option', { value: n.name }, n.name)), h('option', { value: '' }, 'none'));
    profiles.append(...profs.map((p) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'profile', value: p.name, checked: p.name === 'default' }), p.name)));
    if (!profs.length) profiles.append(h('p', { class: 'muted', id: 'c-no-profile' }, 'No profile yet (jaula profile create).'));
  })().catch((e) => say(e.message, 'error'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      const config = {};
      if (memory.value.trim()) config['limits.memory'] = memory.value.trim();
      if (cpu.value.trim()) config['limits.cpu'] = cpu.value.trim();
      if (procs.value.trim()) config['limits.processes'] = procs.value.trim();
      if (network.value) config['nic.eth0.network'] = network.value; else config['nic.eth0.type'] = 'none';
      const chosen = [...profiles.querySelectorAll('input:checked')].map((i) => i.value);
      say(start.checked ? `Creating and starting ${name.value}…` : `Creating ${name.value}…`);
      // one operation: a start the host's capacity refuses is refused before anything is made
      await act('POST', '/1.0/instances', { name: name.value.trim(), template: template.value, config, profiles: chosen,
                                            start: start.checked });
      say(`${name.value} created${start.checked ? ' and started' : ''}`);
      location.hash = `#/instances/${encodeURIComponent(name.value.trim())}`;
    });
  });
  return () => {};
}

export function templatesPage(main) {
  const list = h('div');
  const bName = h('input', { id: 't-name', required: true, autocomplete: 'off', placeholder: 'bookworm' });
  const bSource = h('select', { id: 't-source' }, ['busybox', 'debootstrap'].map((s) => h('option', { value: s }, s)));
  const bSuite = h('input', { id: 't-suite', placeholder: 'bookworm (debootstrap)', autocomplete: 'off' });
  const progress = h('progress', { id: 't-progress', max: 1, value: 0, hidden: true, 'aria-label': 'Build progress' });
  const stage = h('p', { class: 'muted', 'aria-live': 'polite' });
  const build = h('form', { class: 'stack', id: 'build-form' }, field('t-name', 'Name', bName), field('t-source', 'Source', bSource), field('t-suite', 'Suite', bSuite),
    h('button', { type: 'submit' }, 'Build'), progress, stage);
  const iName = h('input', { id: 'i-name', required: true, autocomplete: 'off' });
  const iPath = h('input', { id: 'i-path', required: true, placeholder: '/srv/images/root.tar.gz', autocomplete: 'off' });
  const iFormat = h('select', { id: 'i-format' }, ['tarball', 'image'].map((s) => h('option', { value: s }, s)));
  const imp = h('form', { class: 'stack', id: 'import-form' }, field('i-name', 'Name', iName), field('i-path', 'Archive on the host', iPath), field('i-format', 'Format', iFormat), h('button', { type: 'submit' }, 'Import'));
  main.replaceChildren(h('h1', {}, 'Templates'), h('section', { class: 'card' }, list),
    h('div', { class: 'grid' }, h('section', { class: 'card' }, h('h2', {}, 'Build'), build), h('section', { class: 'card' }, h('h2', {}, 'Import'), imp)));
  const load = async () => {
    const ts = await get('/1.0/templates');
    list.replaceChildren(ts.length ? h('div', { class: 'scroll' }, h('table', { id: 'templates' }, h('thead', {}, h('tr', {}, ...['Name', 'Source', 'OS', 'Size', 'Used by'].map((t) => h('th', {}, t)))),
      h('tbody', {}, ts.map((t) => h('tr', {}, h('td', {}, t.name), h('td', {}, t.source), h('td', {}, `${t.os} ${t.os_version}`), h('td', {}, bytes(t.size)), h('td', {}, t.used_by.join(', ') || '—'))))))
      : h('p', { class: 'muted' }, 'No template yet (busybox is built on first use).'));
  };
  const onProgress = (op) => {
    const m = op.metadata || {};
    progress.hidden = false;
    if (m.total) { progress.max = m.total; progress.value = m.done || 0; } else progress.removeAttribute('value');
    stage.textContent = `${m.stage || op.status}${m.total ? ` ${m.done}/${m.total}` : ''}`;
  };
  build.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(build.querySelector('button'), async () => {
      const options = bSuite.value.trim() ? { suite: bSuite.value.trim() } : {};
      await act('POST', '/1.0/templates', { name: bName.value.trim(), source: bSource.value, options }, onProgress);
      say(`template ${bName.value} built`); await load();
    });
  });
  imp.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(imp.querySelector('button'), async () => {
      await act('POST', '/1.0/templates/import', { name: iName.value.trim(), path: iPath.value.trim(), format: iFormat.value }, onProgress);
      say(`template ${iName.value} imported`); await load();
    });
  });
  load().catch((e) => say(e.message, 'error'));
  return () => {};
}

export function networksPage(main) {
  const box = h('section', { class: 'card' }, h('p', {}, 'Loading…'));
  main.replaceChildren(h('h1', {}, 'Networks'), box);
  (async () => {
    const nets = await get('/1.0/networks');
    box.replaceChildren(nets.length ? h('div', { class: 'scroll' }, h('table', { id: 'networks' }, h('thead', {}, h('tr', {}, ...['Name', 'IPv4', 'IPv6', 'Bridge', 'Used by'].map((t) => h('th', {}, t)))),
      h('tbody', {}, nets.map((n) => h('tr', {}, h('td', {}, n.name), h('td', {}, n.config['ipv4.address'] || '—'), h('td', {}, n.config['ipv6.address'] || '—'),
        h('td', {}, n.config.bridge || '—'), h('td', {}, n.used_by.join(', ') || '—'))))))
      : h('p', { class: 'muted' }, 'No network yet (the default one is made when an instance first uses it).'));
  })().catch((e) => say(e.message, 'error'));
  return () => {};
}

export { request };
