// Sparklines and graphs as SVG polylines (no library), and a per-instance sampler of the stats.
import { get } from './api.js';

const SVG = 'http://www.w3.org/2000/svg';

export function line(values, { width = 120, height = 28, max = null, limit = null, cls = 'spark', label = '' } = {}) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', cls);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const top = Math.max(max ?? 0, limit ?? 0, ...values, 1e-9);
  const n = Math.max(values.length - 1, 1);
  const pts = values.map((v, i) => `${(i / n) * width},${height - 1 - (v / top) * (height - 2)}`).join(' ');
  const pl = document.createElementNS(SVG, 'polyline');
  pl.setAttribute('points', pts);
  svg.append(pl);
  if (limit) {
    const l = document.createElementNS(SVG, 'line');
    const y = height - 1 - (limit / top) * (height - 2);
    Object.entries({ x1: 0, x2: width, y1: y, y2: y, class: 'limit' }).forEach(([k, v]) => l.setAttribute(k, v));
    svg.append(l);
  }
  return svg;
}

// Samples of one instance's counters: cpu % (from cpu_usage_ns deltas), memory, pids, io rate.
export class Sampler {
  constructor(name, keep = 60, net = false) {
    this.name = name; this.keep = keep; this.net = net; this.last = null; this.rows = [];
    this.series = { cpu: [], memory: [], pids: [], io: [], rx: [], tx: [] };
  }

  // The bytes through its NICs (their host-side veths' counters), summed: [rx, tx] or null.
  async netBytes() {
    if (!this.net) return null;
    const r = await fetch(`/ui/netstats/${encodeURIComponent(this.name)}`, { credentials: 'same-origin' });
    if (!r.ok) return null;
    const nics = (await r.json()).nics.filter((n) => n.rx_bytes !== null);
    return nics.length ? [nics.reduce((a, n) => a + n.rx_bytes, 0), nics.reduce((a, n) => a + n.tx_bytes, 0)] : null;
  }

  async sample() {
    const [st, net] = await Promise.all([get(`/1.0/instances/${encodeURIComponent(this.name)}/stats`), this.netBytes()]);
    const now = performance.now();
    this.rows = st.rows || [];
    const row = (r) => this.rows.find((x) => x.resource === r);
    if (this.last && st.cpu_usage_ns !== null && this.last.cpu !== null) {
      const dt = (now - this.last.t) / 1000;
      this.push('cpu', Math.max(0, (st.cpu_usage_ns - this.last.cpu) / 1e9 / dt * 100));
      const io = row('io');
      if (io && this.last.io !== null) this.push('io', Math.max(0, (io.held - this.last.io) / dt));
      if (net && this.last.net) {
        this.push('rx', Math.max(0, (net[0] - this.last.net[0]) / dt));
        this.push('tx', Math.max(0, (net[1] - this.last.net[1]) / dt));
      }
    }
    this.push('memory', row('memory') ? row('memory').held || 0 : 0);
    this.push('pids', row('pids') ? row('pids').held || 0 : 0);
    this.last = { t: now, cpu: st.cpu_usage_ns, io: row('io') ? row('io').held : null, net };
    return this;
  }

  push(k, v) { const s = this.series[k]; s.push(v); if (s.length > this.keep) s.shift(); }
  limit(resource) { const r = this.rows.find((x) => x.resource === resource); return r ? r.limit : null; }
}
