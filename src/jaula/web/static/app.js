// The control center's entry: the login, then the views by the URL's fragment
// (#/, #/instances/NAME, #/create, #/templates, #/networks).
import { request, setCsrf, whenUnauthorized } from './api.js';
import { dashboard } from './dashboard.js';
import { busy, clearSay, h, say, sayError } from './dom.js';
import { instancePage } from './instance.js';
import { createPage, networksPage, templatesPage } from './pages.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let leave = () => {};

function loginPage() {
  leave(); leave = () => {};
  nav.hidden = true;
  const kind = h('select', { id: 'l-kind', name: 'kind' }, h('option', { value: 'password' }, 'Password'), h('option', { value: 'token' }, 'API token'));
  const secret = h('input', { id: 'l-secret', name: 'secret', type: 'password', required: true, autocomplete: 'current-password' });
  const form = h('form', { class: 'stack card', id: 'login-form' },
    h('label', { for: 'l-kind' }, 'Log in with', kind),
    h('label', { for: 'l-secret' }, 'Password or token', secret),
    h('p', { class: 'muted' }, 'The password is set on the host with `jaulad --set-password`; the token is printed by `jaulad --show-token`.'),
    h('button', { type: 'submit' }, 'Log in'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(form.querySelector('button'), async () => {
      const r = await request('POST', '/ui/login', { [kind.value]: secret.value });
      setCsrf(r.csrf);
      clearSay();
      route();
    });
  });
  main.replaceChildren(h('h1', {}, 'Log in to jaula'), form);
  secret.focus();
}

let routing = 0;  // a newer route() (a click while the session was asked for) wins

async function route() {
  leave(); leave = () => {};
  const mine = ++routing;
  let session;
  try { session = await request('GET', '/ui/session'); } catch (e) { if (mine === routing) loginPage(); return; }
  if (mine !== routing) return;
  setCsrf(session.csrf);
  nav.hidden = false;
  const hash = location.hash || '#/';
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === hash) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const m = hash.match(/^#\/instances\/(.+)$/);
  try {
    if (m) leave = instancePage(main, decodeURIComponent(m[1]));
    else if (hash === '#/create') leave = createPage(main);
    else if (hash === '#/templates') leave = templatesPage(main);
    else if (hash === '#/networks') leave = networksPage(main);
    else leave = dashboard(main);
  } catch (e) { sayError(e); }
  main.focus();
}

whenUnauthorized(() => { say('Your session ended: log in again', 'error'); loginPage(); });
document.getElementById('logout').addEventListener('click', async () => {
  try { await request('POST', '/ui/logout'); } catch (e) { /* gone already */ }
  setCsrf(null);
  loginPage();
});
window.addEventListener('hashchange', route);
route();
