"""What the browser tools run in a page: a readable-text pass and the list of the
page's interactive elements, each tagged with a stable reference.

Both run in the page's own JavaScript world, which the page controls: whatever they
return is the page's word (the tools treat it as untrusted, and cap it again).
"""

from __future__ import annotations

__all__ = ["OBSERVE_JS", "READ_JS", "SAME_TAB_JS", "SCROLL_JS"]

#: ``(max) => {title, url, text}``: the title, and the text of the page's main part
#: (``main``, ``article``, ``[role=main]`` unless it holds little of the page, else
#: the body), at most ``max + 1``
#: characters of it (one more than shown tells that it was cut).
READ_JS = r"""
(max) => {
  const body = document.body;
  const main = document.querySelector('main, article, [role=main]');
  const all = body ? String(body.innerText || '') : '';
  let text = main ? String(main.innerText || '') : '';
  // A main part that holds little of the page is not the page's main part.
  if (text.trim().length < Math.min(200, all.trim().length / 4)) text = all;
  text = String(text).replace(/[ \t]+\n/g, '\n').replace(/\n{3,}/g, '\n\n').trim();
  return {title: String(document.title || ''), url: String(location.href),
          text: text.slice(0, max + 1)};
}
"""

#: ``({attr, limit}) => {items, total}``: the visible interactive elements of the
#: main frame, in document order. An element keeps the reference it was given
#: (``e0``, ``e1``... in the attribute ``attr``, a name random per page) for as long
#: as it lives; new elements get the next numbers. At most ``limit`` are described.
OBSERVE_JS = r"""
({attr, limit}) => {
  const selector = [
    'a[href]', 'button', 'input:not([type=hidden])', 'select', 'textarea', 'summary',
    '[role=button]', '[role=link]', '[role=checkbox]', '[role=radio]', '[role=tab]',
    '[role=menuitem]', '[role=option]', '[role=switch]', '[role=textbox]',
    '[role=combobox]', '[role=searchbox]', '[onclick]', '[contenteditable=""]',
    '[contenteditable=true]', '[tabindex]:not([tabindex="-1"])'].join(',');
  let next = 0;
  for (const el of document.querySelectorAll('[' + attr + ']')) {
    const m = /^e(\d{1,7})$/.exec(el.getAttribute(attr) || '');
    if (m) next = Math.max(next, parseInt(m[1], 10) + 1);
  }
  const clip = (s, n) => {
    s = String(s == null ? '' : s).replace(/\s+/g, ' ').trim();
    return s.length > n ? s.slice(0, n) + '...' : s;
  };
  const items = [];
  let total = 0;
  for (const el of document.querySelectorAll(selector)) {
    const rect = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (rect.width <= 0 || rect.height <= 0 || style.visibility === 'hidden'
        || style.display === 'none') continue;
    total += 1;
    let ref = el.getAttribute(attr);
    if (!/^e\d{1,7}$/.test(ref || '')) {
      ref = 'e' + next;
      next += 1;
      el.setAttribute(attr, ref);
    }
    if (items.length >= limit) continue;
    const tag = el.tagName.toLowerCase();
    const type = tag === 'input' ? (el.getAttribute('type') || 'text').toLowerCase() : '';
    const label = el.labels && el.labels.length ? el.labels[0].innerText : '';
    const name = el.getAttribute('aria-label') || label
      || (tag === 'input' || tag === 'select' || tag === 'textarea' ? '' : el.innerText)
      || el.getAttribute('title') || el.getAttribute('alt') || el.getAttribute('name') || '';
    const item = {ref, tag, role: el.getAttribute('role') || '', type,
                  name: clip(name, 120)};
    if (tag === 'a') item.href = clip(el.getAttribute('href'), 200);
    if (el.placeholder) item.placeholder = clip(el.placeholder, 80);
    if ((tag === 'input' || tag === 'textarea' || tag === 'select') && el.value
        && !['password', 'checkbox', 'radio'].includes(type)) item.value = clip(el.value, 120);
    if (type === 'checkbox' || type === 'radio') item.checked = !!el.checked;
    if (el.disabled) item.disabled = true;
    items.push(item);
  }
  return {items, total};
}
"""

#: Run in every page before its own scripts: links and ``window.open`` open in the
#: same tab, so the session's page is where the model acted. (A page that gets a new
#: tab open anyway makes it the session's page: :meth:`Tab.adopt`.)
SAME_TAB_JS = r"""
(() => {
  document.addEventListener('click', (event) => {
    const target = event.target;
    const link = target && target.closest ? target.closest('a[target], area[target]') : null;
    if (link) link.target = '_self';
  }, true);
  document.addEventListener('submit', (event) => {
    if (event.target && event.target.target) event.target.target = '_self';
  }, true);
  window.open = function (url) {
    if (url) location.href = url;
    return null;
  };
})();
"""

#: ``(up) => scrollY``: the page scrolled by most of a screen, down or up.
SCROLL_JS = r"""
(up) => {
  window.scrollBy(0, (up ? -1 : 1) * Math.max(100, Math.round(window.innerHeight * 0.8)));
  return window.scrollY;
}
"""
