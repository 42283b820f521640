/* Live console pages without a reload (the overview, the agent and task lists).
 *
 * Every N seconds: fetch this same URL, parse it, and patch in place only the
 * live parts named by the script tag (data-parts, CSS selectors). Nodes whose
 * structure is unchanged are kept and only their text and attributes are
 * updated, so focus, scroll and open <details> survive; where rows come or go
 * the part is replaced, the open <details> carried over by key and the focus
 * restored by key. A failed fetch keeps the page as it is and says so; a fetch
 * that lands on the login page (the session expired) stops the updates.
 * The paused state is kept in localStorage. Plain DOM, no build step.
 */
'use strict';
(function () {
  const script = document.currentScript;
  const interval = Math.max(2, Number(script.dataset.interval) || 10) * 1000;
  const parts = (script.dataset.parts || '').split(',').map(s => s.trim()).filter(Boolean);
  const PAUSE_KEY = 'meridian.live.paused';
  let lastUpdate = Date.now();
  let timer = null;
  let busy = false;
  let stopped = false;

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }
  function store(key, value) {
    try { if (value === null) window.localStorage.removeItem(key); else window.localStorage.setItem(key, value); }
    catch (e) { /* private mode: the state lasts as long as the page */ }
  }
  let paused = stored(PAUSE_KEY) === '1';

  // --- the bar: "updated N s ago", the status, Pause/Resume -----------------------------
  const bar = document.createElement('div');
  bar.className = 'live-bar';
  bar.innerHTML = '<span class="live-age"></span> <span class="live-status" role="status" aria-live="polite"></span> ' +
    '<button type="button" class="live-pause button"></button>';
  const ageEl = bar.querySelector('.live-age');
  const statusEl = bar.querySelector('.live-status');
  const button = bar.querySelector('.live-pause');

  function ageText(seconds) {
    if (seconds < 120) return seconds + ' s ago';
    return Math.floor(seconds / 60) + ' min ago';
  }
  function tick() {
    ageEl.textContent = 'Updated ' + ageText(Math.floor((Date.now() - lastUpdate) / 1000));
  }
  function say(text) {
    if (statusEl.textContent !== text) statusEl.textContent = text;
  }
  function showPaused() {
    button.setAttribute('aria-pressed', paused ? 'true' : 'false');
    button.textContent = paused ? 'Resume updates' : 'Pause updates';
    if (!stopped) say(paused ? 'Updates paused.' : '');
  }
  button.addEventListener('click', function () {
    if (stopped) return;
    paused = !paused;
    store(PAUSE_KEY, paused ? '1' : null);
    showPaused();
    if (!paused) update();
  });

  // --- keys: what identifies a node across two renderings ---------------------------------
  function scopeId(el) {
    const scope = el.parentElement && el.parentElement.closest('[id]');
    return scope ? scope.id : '';
  }
  function detailsKey(d) {
    if (d.id) return '#' + d.id;
    const summary = d.querySelector('summary');
    return scopeId(d) + '|' + (summary ? summary.textContent.trim() : '');
  }
  function focusKey(el) {
    if (el.id) return {id: el.id};
    const details = el.tagName === 'SUMMARY' && el.parentElement;
    return {
      scope: scopeId(el), tag: el.tagName, name: el.getAttribute('name'), value: el.getAttribute('value'),
      href: el.getAttribute('href'), text: el.textContent.trim(), details: details ? detailsKey(details) : null,
    };
  }
  function findByKey(root, key) {
    if (key.id) return document.getElementById(key.id);
    const candidates = root.querySelectorAll(key.tag.toLowerCase());
    for (const el of candidates) {
      const k = focusKey(el);
      if (k.scope === key.scope && k.name === key.name && k.value === key.value && k.href === key.href &&
          (key.details ? k.details === key.details : k.text === key.text)) return el;
    }
    return null;
  }

  // --- the patch ---------------------------------------------------------------------------
  function sameShape(a, b) {
    if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
    if (a.nodeType !== Node.ELEMENT_NODE) return true;
    return a.id === b.id && a.childNodes.length === b.childNodes.length;
  }
  function syncAttributes(old, fresh) {
    for (const attr of Array.from(old.attributes)) {
      if (!fresh.hasAttribute(attr.name) && !(old.tagName === 'DETAILS' && attr.name === 'open')) {
        old.removeAttribute(attr.name);
      }
    }
    for (const attr of Array.from(fresh.attributes)) {
      if (old.tagName === 'DETAILS' && attr.name === 'open') continue;  // the reader's choice, not the server's
      if (old.getAttribute(attr.name) !== attr.value) old.setAttribute(attr.name, attr.value);
    }
  }
  /* Returns whether nodes were replaced (not only updated). */
  function patch(old, fresh) {
    if (old.isEqualNode(fresh)) return false;
    if (old.nodeType !== Node.ELEMENT_NODE) {
      if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
      return false;
    }
    syncAttributes(old, fresh);
    if (old.tagName === 'INPUT' || old.tagName === 'SELECT' || old.tagName === 'TEXTAREA') return false;
    let replaced = false;
    const olds = Array.from(old.childNodes);
    const freshes = Array.from(fresh.childNodes);
    if (olds.length === freshes.length && olds.every((n, i) => sameShape(n, freshes[i]))) {
      olds.forEach((n, i) => { replaced = patch(n, freshes[i]) || replaced; });
      return replaced;
    }
    // Rows came or went: replace the children, carrying open <details> over by key.
    const open = new Set(Array.from(old.querySelectorAll('details[open]')).map(detailsKey));
    const imported = freshes.map(n => document.importNode(n, true));
    old.replaceChildren(...imported);
    for (const d of old.querySelectorAll('details')) {
      if (open.has(detailsKey(d))) d.setAttribute('open', ''); else d.removeAttribute('open');
    }
    return true;
  }

  function sameTree(a, b) {
    if (!sameShape(a, b)) return false;
    return Array.from(a.childNodes).every((n, i) => sameTree(n, b.childNodes[i]));
  }

  /* The results table is replaced whole when rows come or go: the admin's actions
     script listens on its tbody and is handed the new one (no stale listeners). */
  const WHOLE = new Set(['#result_list']);

  function applyPart(selector, doc) {
    let old = document.querySelector(selector);
    const fresh = doc.querySelector(selector);
    if (!old || !fresh) return false;
    const focused = document.activeElement;
    const key = focused && focused !== document.body && old.contains(focused) ? focusKey(focused) : null;
    let replaced;
    if (WHOLE.has(selector) && !sameTree(old, fresh)) {
      const imported = document.importNode(fresh, true);
      old.replaceWith(imported);
      old = imported;
      replaced = true;
    } else {
      replaced = patch(old, fresh);
    }
    if (key && !old.contains(document.activeElement)) {
      const again = findByKey(old, key);
      if (again) again.focus({preventScroll: true});
    }
    return replaced;
  }

  function selected() {
    return document.querySelector('#result_list input.action-select:checked') !== null;
  }

  function expired(text) {
    stopped = true;
    window.clearInterval(timer);
    statusEl.innerHTML = '';
    statusEl.append(text + ' ');
    const link = document.createElement('a');
    link.href = window.location.href;
    link.textContent = 'Sign in again';
    statusEl.append(link);
    button.disabled = true;
  }

  async function update() {
    if (busy || stopped || paused || document.hidden) return;
    if (selected()) { say('Updates wait while rows are selected.'); return; }
    busy = true;
    const abort = new AbortController();
    const limit = window.setTimeout(() => abort.abort(), Math.max(interval - 500, 5000));
    try {
      const response = await fetch(window.location.href, {
        credentials: 'same-origin', headers: {'Accept': 'text/html'}, signal: abort.signal, cache: 'no-store'});
      const url = new URL(response.url, window.location.href);
      if (url.pathname.endsWith('/login/') || response.status === 401 || response.status === 403) {
        expired('Session expired: updates stopped.');
        return;
      }
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const doc = new DOMParser().parseFromString(await response.text(), 'text/html');
      if (doc.getElementById('login-form')) { expired('Session expired: updates stopped.'); return; }
      if (paused || stopped || selected()) return;  // the reader acted while the page was on its way
      const scrollX = window.scrollX, scrollY = window.scrollY;
      let replacedRows = false;
      for (const selector of parts) {
        replacedRows = applyPart(selector, doc) || replacedRows;
      }
      window.scrollTo(scrollX, scrollY);
      // The admin's actions script holds the list's checkboxes: hand it the new ones.
      if (replacedRows && typeof window.Actions === 'function') {
        const boxes = document.querySelectorAll('tr input.action-select');
        if (boxes.length) window.Actions(boxes);
      }
      lastUpdate = Date.now();
      say('');
      tick();
      document.dispatchEvent(new CustomEvent('meridian:live-updated'));
    } catch (e) {
      say('Update failed, retrying in ' + Math.round(interval / 1000) + ' s.');
    } finally {
      window.clearTimeout(limit);
      busy = false;
    }
  }

  /* On a narrow screen the charts over time scroll sideways in their own box
     (.ov-chart): each opens on its latest minutes, at the right. */
  function showLatest() {
    for (const box of document.querySelectorAll('#fleet-overview .ov-chart')) {
      if (box.scrollWidth > box.clientWidth) box.scrollLeft = box.scrollWidth;
    }
  }

  function start() {
    const first = parts.map(s => document.querySelector(s)).find(Boolean);
    if (!first) return;
    showLatest();
    const anchor = document.querySelector('#fleet-overview') || document.querySelector('#changelist') || first;
    anchor.parentElement.insertBefore(bar, anchor);
    showPaused();
    tick();
    window.setInterval(tick, 1000);
    timer = window.setInterval(update, interval);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) update(); });
    window.meridianLive = {update: update, interval: interval};
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
