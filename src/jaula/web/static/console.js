// Terminals in xterm.js over jaulad's websockets, in jaula.frames' framing (a channel byte, then
// the data; 0 stdin, 1 stdout, 2 stderr, 3 control):
// - openConsole: the instance's own console (/dev/console of a system instance, a pty held by
//   the console keeper): WebSocket /1.0/instances/NAME/console?attach=true&replay=true, the kept
//   output first, then typed keys and resizes go to the console.
// - openShell: a shell inside the instance, an interactive exec (a pty) over its websocket.
import { send } from './api.js';

const enc = new TextEncoder();

function frame(channel, data) {
  const bytes = typeof data === 'string' ? enc.encode(data) : data;
  const out = new Uint8Array(bytes.length + 1);
  out[0] = channel;
  out.set(bytes, 1);
  return out;
}

function terminal(box) {
  if (!window.Terminal || !window.FitAddon) {
    throw new Error('xterm.js is not installed on the host: run scripts/setup (npm install in web/)');
  }
  const term = new window.Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 2000 });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  return { term, fit };
}

// Wire a terminal to an open-to-be websocket; `ended(msg)` words the exit message. Returns the closer.
function wire(term, fit, url, ended, onEnd) {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}${url}`);
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
      term.write(msg.type === 'exit' ? `\r\n[${ended(msg)}]\r\n` : `\r\n[error: ${msg.message}]\r\n`);
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

export async function openConsole(name, box, onEnd) {
  const { term, fit } = terminal(box);
  return wire(term, fit, `/1.0/instances/${encodeURIComponent(name)}/console?attach=true&replay=true`,
    () => 'the instance stopped: its console closed', onEnd);
}

export async function openShell(name, box, onEnd) {
  const { term, fit } = terminal(box);
  let r;
  try {
    r = await send('POST', `/1.0/instances/${encodeURIComponent(name)}/exec`,
      { command: ['/bin/sh'], interactive: true, width: term.cols, height: term.rows, environment: { TERM: 'xterm-256color' } });
  } catch (e) { term.dispose(); throw e; }
  const { websocket, secret } = r.metadata.metadata;
  return wire(term, fit, `${websocket}?secret=${encodeURIComponent(secret)}`, (msg) => `the shell exited: ${msg.code}`, onEnd);
}
