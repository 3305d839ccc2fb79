// One instance: actions, config and limits (live ones applied at once), live graphs and counters,
// its console and a shell in xterm.js, the kept console output, snapshots, NICs and port forwards.
import { act, get, send } from './api.js';
import { line, Sampler } from './charts.js';
import { openConsole, openShell } from './console.js';
import { busy, bytes, confirmAction, h, say, sayError, stateBadge } from './dom.js';

const ACTIONS = [  // [action, label, allowed states, confirm?]
  ['start', 'Start', ['stopped', 'error'], false],
  ['stop', 'Stop', ['running', 'frozen', 'error'], true],
  ['restart', 'Restart', ['running', 'stopped', 'error'], true],
  ['freeze', 'Freeze', ['running'], true],
  ['unfreeze', 'Unfreeze', ['frozen'], false],
];

function counterValue(row, key) {
  const v = row[key];
  if (v === null || v === undefined) return key === 'limit' ? 'unlimited' : '—';
  if (key === 'failcnt') return String(v);  // a count, whatever the resource's unit
  return row.unit === 'bytes' ? bytes(v) : row.unit === 'ns' && key !== 'failcnt' ? `${(v / 1e9).toFixed(2)} s` : String(v);
}

export function instancePage(main, name) {
  const path = `/1.0/instances/${encodeURIComponent(name)}`;
  const sampler = new Sampler(name, 90, true);
  const cleanups = [];
  let inst = null;
  let settings = [];

  const head = h('div');
  const configBox = h('div');
  const graphs = h('div', { class: 'grid' });
  const counters = h('tbody');
  const snaps = h('div');
  const netBox = h('div');
  const termBox = h('div', { class: 'term', id: 'terminal', hidden: true });
  const consoleBox = h('div', { class: 'term', id: 'console-terminal', hidden: true });
  const consoleOut = h('pre', { class: 'console', id: 'console-log', tabindex: 0, 'aria-label': 'Kept console output' });
  // a terminal behind a toggle button: [button, its label, the opener, the box]
  const toggle = (id, label, open, box) => {
    const btn = h('button', { type: 'button', id }, label);
    let close = null;
    const reset = () => { close = null; btn.textContent = label; };
    btn.addEventListener('click', () => busy(btn, async () => {
      if (close) { close(); reset(); box.hidden = true; return; }
      box.hidden = false;
      box.replaceChildren();
      close = await open(name, box, reset);
      btn.textContent = `Close ${label.toLowerCase()}`;
    }));
    cleanups.push(() => close && close());
    return { btn, isOpen: () => close !== null };
  };
  const consoleT = toggle('open-console', 'Console', openConsole, consoleBox);
  const shellT = toggle('open-shell', 'Shell', openShell, termBox);
  const consoleBtn = consoleT.btn;
  const shellBtn = shellT.btn;

  main.replaceChildren(head,
    h('section', { class: 'card', 'aria-labelledby': 'cfg-h' }, h('h2', { id: 'cfg-h' }, 'Config and limits'), configBox),
    h('section', { class: 'card', 'aria-labelledby': 'g-h' }, h('h2', { id: 'g-h' }, 'Live usage'), graphs,
      h('div', { class: 'scroll' }, h('table', { id: 'counters', 'aria-label': 'Counters' },
        h('thead', {}, h('tr', {}, ...['Resource', 'Held', 'Peak', 'Limit', 'Fails'].map((t) => h('th', {}, t)))), counters))),
    h('section', { class: 'card', 'aria-labelledby': 'con-h' }, h('h2', { id: 'con-h' }, 'Console'),
      h('p', { class: 'muted' }, 'Console: the instance\'s own /dev/console (a system instance\'s init and the shell on it; press Enter for a prompt). '
        + 'Shell: a new /bin/sh inside on a terminal. Below them, the kept console output.'),
      h('div', { class: 'actions' }, consoleBtn, shellBtn), consoleBox, termBox, consoleOut),
    h('section', { class: 'card', 'aria-labelledby': 'snap-h' }, h('h2', { id: 'snap-h' }, 'Snapshots'), snaps),
    h('section', { class: 'card', 'aria-labelledby': 'net-h' }, h('h2', { id: 'net-h' }, 'Network'), netBox));

  const renderHead = () => {
    head.replaceChildren(h('h1', {}, name, ' ', stateBadge(inst.status)),
      h('p', { class: 'muted' }, `${inst.template} · ${inst.mode} · ${inst.privileged ? 'privileged' : 'unprivileged'}`,
        inst.pid ? ` · pid ${inst.pid}` : '', inst.profiles.length ? ` · profiles ${inst.profiles.join(', ')}` : ''),
      h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' },
        ...ACTIONS.filter(([, , states]) => states.includes(inst.status)).map(([action, label, , ask]) => {
          const b = h('button', { type: 'button', class: action === 'stop' ? 'secondary' : null, 'data-action': action }, label);
          b.addEventListener('click', () => busy(b, async () => {
            if (ask && !(await confirmAction(`${label} instance ${name}?`, label))) return;
            say(`${label}: ${name}…`);
            await act('PUT', `${path}/state`, { action, timeout: 10 });
            say(`${name}: ${action} done`);
            await load();
          }));
          return b;
        }),
        (() => {
          const b = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' }, 'Delete');
          b.addEventListener('click', () => busy(b, async () => {
            const running = inst.status !== 'stopped';
            if (!(await confirmAction(`Delete instance ${name}${running ? ' (it is stopped first, by force)' : ''}? Its root and snapshots go too.`, 'Delete'))) return;
            await act('DELETE', `${path}${running ? '?force=true' : ''}`);
            say(`${name} deleted`);
            location.hash = '#/';
          }));
          return b;
        })()));
  };

  const renderConfig = () => {
    const own = inst.config;
    const keySel = h('select', { id: 'cfg-key', name: 'key' }, settings.map((s) => h('option', { value: s.key }, `${s.key}${s.live ? '' : ' (stopped only)'}`)));
    const value = h('input', { id: 'cfg-value', name: 'value', placeholder: 'e.g. 256MiB', autocomplete: 'off' });
    const help = h('p', { class: 'muted', id: 'cfg-help' });
    const showHelp = () => { const s = settings.find((x) => x.key === keySel.value); help.textContent = s ? s.description : ''; value.value = own[keySel.value] || ''; };
    keySel.addEventListener('change', showHelp);
    const form = h('form', { class: 'inline', id: 'config-form' },
      h('label', { for: 'cfg-key' }, 'Setting', keySel), h('label', { for: 'cfg-value' }, 'Value', value),
      h('button', { type: 'submit' }, 'Set'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      busy(form.querySelector('button'), async () => {
        await send('PATCH', path, { config: { [keySel.value]: value.value } });
        say(`${keySel.value} = ${value.value || '(unset)'} on ${name}`);
        await load();
      });
    });
    const rows = Object.entries(inst.expanded_config).map(([k, v]) => {
      const mine = k in own;
      const unset = mine ? h('button', { type: 'button', class: 'link', 'aria-label': `Unset ${k}` }, 'unset') : null;
      if (unset) unset.addEventListener('click', () => busy(unset, async () => { await send('PATCH', path, { config: { [k]: null } }); await load(); }));
      return h('tr', {}, h('td', {}, k), h('td', { 'data-config': k }, v), h('td', { class: 'muted' }, mine ? 'own' : 'profile'), h('td', {}, unset));
    });
    configBox.replaceChildren(h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Key'), h('th', {}, 'Value'), h('th', {}, 'From'), h('th', {}, ''))), h('tbody', {}, rows))),
      h('h3', {}, 'Change a setting'), form, help);
    showHelp();
  };

  const renderStats = () => {
    const s = sampler.series;
    const graph = (title, values, fmt, limit) => h('figure', { style: 'margin:0', 'data-graph': title },
      h('figcaption', {}, `${title}: `, h('strong', {}, values.length ? fmt(values[values.length - 1]) : '—'), limit ? h('span', { class: 'muted' }, ` (limit ${fmt(limit)})`) : ''),
      line(values, { width: 300, height: 100, cls: 'graph', limit, label: title }));
    graphs.replaceChildren(graph('CPU', s.cpu, (v) => `${v.toFixed(1)} %`),
      graph('Memory', s.memory, bytes, sampler.limit('memory')),
      graph('Processes', s.pids, (v) => String(v), sampler.limit('pids')),
      graph('Disk I/O', s.io, (v) => `${bytes(v)}/s`),
      graph('Network in', s.rx, (v) => `${bytes(v)}/s`),
      graph('Network out', s.tx, (v) => `${bytes(v)}/s`));
    counters.replaceChildren(...sampler.rows.map((r) => h('tr', { 'data-resource': r.resource },
      h('td', {}, r.resource), ...['held', 'maxheld', 'limit', 'failcnt'].map((k) => h('td', { 'data-counter': `${r.resource}-${k}` }, counterValue(r, k))))));
    if (!sampler.rows.length) counters.replaceChildren(h('tr', {}, h('td', { colspan: 5 }, 'No counters: the instance is stopped.')));
  };

  const renderSnapshots = async () => {
    const list = await get(`${path}/snapshots`);
    const snapName = h('input', { id: 'snap-name', name: 'snap', required: true, placeholder: 'before-upgrade' });
    const form = h('form', { class: 'inline' }, h('label', { for: 'snap-name' }, 'New snapshot', snapName), h('button', { type: 'submit' }, 'Take snapshot'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      busy(form.querySelector('button'), async () => { await act('POST', `${path}/snapshots`, { name: snapName.value }); say(`snapshot ${snapName.value} taken`); await renderSnapshots(); });
    });
    const row = (sn) => {
      const restore = h('button', { type: 'button', class: 'secondary' }, 'Restore');
      const del = h('button', { type: 'button', class: 'danger' }, 'Delete');
      restore.addEventListener('click', () => busy(restore, async () => {
        if (!(await confirmAction(`Restore ${name} to snapshot ${sn.name}? Changes since are lost${inst.status !== 'stopped' ? '; it is stopped and started again' : ''}.`, 'Restore'))) return;
        await act('POST', `${path}/snapshots/${encodeURIComponent(sn.name)}/restore`, { stop: inst.status !== 'stopped' });
        say(`${name} restored to ${sn.name}`); await load();
      }));
      del.addEventListener('click', () => busy(del, async () => {
        if (!(await confirmAction(`Delete snapshot ${sn.name}?`, 'Delete'))) return;
        await act('DELETE', `${path}/snapshots/${encodeURIComponent(sn.name)}`); await renderSnapshots();
      }));
      return h('tr', {}, h('td', {}, sn.name), h('td', { class: 'wide' }, sn.created), h('td', {}, bytes(sn.size)), h('td', {}, h('div', { class: 'actions' }, restore, del)));
    };
    snaps.replaceChildren(list.length ? h('div', { class: 'scroll' }, h('table', { id: 'snapshots' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', { class: 'wide' }, 'Taken'), h('th', {}, 'Size'), h('th', {}, ''))), h('tbody', {}, list.map(row))))
      : h('p', { class: 'muted' }, 'No snapshot.'), form);
  };

  // NICs (add: plugged at once into a running instance; remove: confirmed) and the port forwards
  // from the host to this instance (add on a NIC's network, remove).
  const renderNetwork = async () => {
    const [nics, networks] = await Promise.all([get(`${path}/nics`).catch(() => []), get('/1.0/networks').catch(() => [])]);
    const nets = [...new Set(nics.map((n) => n.network).filter(Boolean))];
    const forwards = (await Promise.all(nets.map((n) => get(`/1.0/networks/${encodeURIComponent(n)}/forwards`).catch(() => [])))).flat().filter((f) => f.instance === name);
    const nicRow = (n) => {
      const del = h('button', { type: 'button', class: 'danger', 'aria-label': `Remove NIC ${n.name}` }, 'Remove');
      del.addEventListener('click', () => busy(del, async () => {
        if (!(await confirmAction(`Remove NIC ${n.name} from ${name}? Its addresses and port forwards go too.`, 'Remove'))) return;
        await send('DELETE', `${path}/nics/${encodeURIComponent(n.name)}`);
        say(`NIC ${n.name} removed from ${name}`); await renderNetwork();
      }));
      return h('tr', { 'data-nic': n.name }, h('td', {}, n.name), h('td', {}, n.network || n.type), h('td', {}, n.ipv4 || '—'), h('td', {}, n.ipv6 || '—'),
        h('td', {}, n.mac), h('td', {}, n.host_name || '—'), h('td', {}, del));
    };
    const nicName = h('input', { id: 'nic-name', name: 'nic', required: true, placeholder: 'eth1', autocomplete: 'off' });
    const nicNet = h('select', { id: 'nic-network', name: 'network' }, [h('option', { value: 'default' }, 'default'),
      ...networks.filter((n) => n.name !== 'default').map((n) => h('option', { value: n.name }, n.name))]);
    const nicForm = h('form', { class: 'inline', id: 'nic-form' }, h('label', { for: 'nic-name' }, 'New NIC', nicName),
      h('label', { for: 'nic-network' }, 'On network', nicNet), h('button', { type: 'submit' }, 'Add NIC'));
    nicForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      busy(nicForm.querySelector('button'), async () => {
        await send('POST', `${path}/nics`, { name: nicName.value, config: { network: nicNet.value } });
        say(`NIC ${nicName.value} added to ${name}`); await renderNetwork();
      });
    });
    const fwdRow = (f) => {
      const del = h('button', { type: 'button', class: 'danger', 'aria-label': `Remove forward ${f.proto} ${f.host_port}` }, 'Remove');
      del.addEventListener('click', () => busy(del, async () => {
        await send('DELETE', `/1.0/networks/${encodeURIComponent(f.network)}/forwards/${f.proto}/${f.host_port}?host_address=${encodeURIComponent(f.host_address)}`);
        say(`forward ${f.proto} ${f.host_port} removed`); await renderNetwork();
      }));
      return h('tr', { 'data-forward': `${f.proto}/${f.host_port}` }, h('td', {}, f.proto), h('td', {}, `${f.host_address || '*'}:${f.host_port}`),
        h('td', {}, `${f.nic}:${f.port}`), h('td', {}, f.network), h('td', {}, del));
    };
    const routed = nics.filter((n) => n.network);
    const fNic = h('select', { id: 'fwd-nic', name: 'nic' }, routed.map((n) => h('option', { value: n.name }, `${n.name} (${n.network})`)));
    const fProto = h('select', { id: 'fwd-proto', name: 'proto' }, h('option', { value: 'tcp' }, 'tcp'), h('option', { value: 'udp' }, 'udp'));
    const fHost = h('input', { id: 'fwd-host-port', name: 'host_port', type: 'number', min: 1, max: 65535, required: true, inputmode: 'numeric' });
    const fPort = h('input', { id: 'fwd-port', name: 'port', type: 'number', min: 1, max: 65535, required: true, inputmode: 'numeric' });
    const fwdForm = h('form', { class: 'inline', id: 'forward-form' }, h('label', { for: 'fwd-nic' }, 'NIC', fNic), h('label', { for: 'fwd-proto' }, 'Protocol', fProto),
      h('label', { for: 'fwd-host-port' }, 'Host port', fHost), h('label', { for: 'fwd-port' }, 'Instance port', fPort), h('button', { type: 'submit' }, 'Add forward'));
    fwdForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      busy(fwdForm.querySelector('button'), async () => {
        const nic = routed.find((n) => n.name === fNic.value);
        await send('POST', `/1.0/networks/${encodeURIComponent(nic.network)}/forwards`,
          { instance: name, nic: nic.name, proto: fProto.value, host_port: Number(fHost.value), port: Number(fPort.value) });
        say(`forward ${fProto.value} ${fHost.value} → ${nic.name}:${fPort.value} added`); await renderNetwork();
      });
    });
    netBox.replaceChildren(
      nics.length ? h('div', { class: 'scroll' }, h('table', { id: 'nics' }, h('thead', {}, h('tr', {}, ...['NIC', 'Network', 'IPv4', 'IPv6', 'MAC', 'Host side', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, nics.map(nicRow))))
        : h('p', { class: 'muted' }, 'No NIC.'),
      nicForm,
      h('h3', {}, 'Port forwards'),
      forwards.length ? h('div', { class: 'scroll' }, h('table', { id: 'forwards' }, h('thead', {}, h('tr', {}, ...['Proto', 'Host', 'To', 'Network', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, forwards.map(fwdRow))))
        : h('p', { class: 'muted' }, 'No port forward.'),
      routed.length ? fwdForm : h('p', { class: 'muted' }, 'A forward needs a NIC on a network.'));
  };

  const loadConsole = async () => {
    try {
      const r = await fetch(`${path}/console`, { credentials: 'same-origin' });
      consoleOut.textContent = r.ok ? (await r.text()) || '(nothing printed yet)' : '(no console log)';
    } catch { consoleOut.textContent = '(no console log)'; }
  };

  async function load() {
    inst = await get(path);
    renderHead();
    renderConfig();
    if (inst.status === 'running' || inst.status === 'frozen') await sampler.sample().catch(() => {});
    else { sampler.rows = []; }
    renderStats();
    shellBtn.disabled = inst.status !== 'running' && !shellT.isOpen();
    consoleBtn.disabled = (inst.status !== 'running' || inst.mode !== 'system') && !consoleT.isOpen();
  }

  (async () => {
    try {
      settings = (await get('/1.0')).settings;
      await load();
      await Promise.all([renderSnapshots(), renderNetwork(), loadConsole()]);
    } catch (e) { sayError(e); }
  })();
  const timer = setInterval(async () => {
    if (!inst || (inst.status !== 'running' && inst.status !== 'frozen')) return;
    try { await sampler.sample(); renderStats(); } catch (e) { /* stopped meanwhile: the next load says so */ }
  }, 1000);
  cleanups.push(() => clearInterval(timer));
  return () => cleanups.forEach((f) => f());
}
