// A shell inside the instance in xterm.js: an interactive exec (a pty) over its websocket, in
// jaula.frames' framing (a channel byte, then the data; 0 stdin, 1 stdout, 2 stderr, 3 control).
import { send } from './api.js';

const enc = new TextEncoder();

function frame(channel, data) {
  const bytes = typeof data === 'string' ? enc.encode(data) : data;
  const out = new Uint8Array(bytes.length + 1);
  out[0] = channel;
  out.set(bytes, 1);
  return out;
}

export async function openShell(name, box, onEnd) {
  if (!window.Terminal || !window.FitAddon) {
    throw new Error('xterm.js is not installed on the host: run scripts/setup (npm install in web/)');
  }
  const term = new window.Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 2000 });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const r = await send('POST', `/1.0/instances/${encodeURIComponent(name)}/exec`,
    { command: ['/bin/sh'], interactive: true, width: term.cols, height: term.rows, environment: { TERM: 'xterm-256color' } });
  const { websocket, secret } = r.metadata.metadata;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}${websocket}?secret=${encodeURIComponent(secret)}`);
  ws.binaryType = 'arraybuffer';
  const resize = () => {
    fit.fit();
    if (ws.readyState === WebSocket.OPEN) ws.send(frame(3, JSON.stringify({ type: 'resize', width: term.cols, height: term.rows })));
  };
  ws.onopen = () => { term.focus(); resize(); };
  ws.onmessage = (ev) => {
    const data = new Uint8Array(ev.data);
    if (!data.length) return;
    if (data[0] === 1 || data[0] === 2) term.write(data.subarray(1));
    else if (data[0] === 3) {
      const msg = JSON.parse(new TextDecoder().decode(data.subarray(1)));
      term.write(msg.type === 'exit' ? `\r\n[the shell exited: ${msg.code}]\r\n` : `\r\n[error: ${msg.message}]\r\n`);
    }
  };
  ws.onclose = () => onEnd && onEnd();
  const sub = term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(frame(0, d)); });
  window.addEventListener('resize', resize);
  return () => {
    window.removeEventListener('resize', resize);
    sub.dispose();
    if (ws.readyState <= WebSocket.OPEN) ws.close();
    term.dispose();
  };
}
