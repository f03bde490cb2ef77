// A scrolling list of variable-height rows that keeps the DOM bounded: only a window
// of at most `max` consecutive items exists as elements; scrolling near an edge moves
// the window by `step` items (keeping what is on screen where it is), and scrolling
// past the oldest item loaded asks `loadOlder()` for more (the session's earlier
// events, read backwards from the API). New items at the end follow the view when the
// reader is at the bottom; otherwise a "new below" button says how many arrived.

import { h } from "../ui.js";

const EDGE_PX = 400;
const FOLLOW_PX = 60;

// windowList({label, render(item) -> Element, keyOf(item), loadOlder?, max, step})
export function windowList({ label, render, keyOf, loadOlder = null, max = 240, step = 80,
                             empty = "Nothing here yet." }) {
  const items = [];
  let lo = 0;
  let hi = 0;
  const rendered = new Map(); // key -> element, for the items in [lo, hi)
  let more = Boolean(loadOlder);
  let loading = false;
  let unseen = 0;
  let scheduled = false;
  // Pages read in a row that added nothing to this list (a chat in a log of tool calls):
  // after a few, more wait for the reader (a scroll or "Load older").
  let dry = 0;
  const DRY_LIMIT = 4;

  const olderButton = h("button.ghost.wlist-older", { type: "button" }, "Load older");
  const topEdge = h("div.wlist-edge", olderButton);
  const body = h("div.wlist-body");
  const emptyEl = h("p.empty.wlist-empty", empty);
  const scroller = h("div.wlist", { role: "log", "aria-label": label, tabindex: "0",
                                    "aria-live": "off" }, topEdge, emptyEl, body);
  const jump = h("button.wlist-jump", { type: "button", hidden: true }, "");
  const el = h("div.wlist-wrap", scroller, jump);

  function atBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < FOLLOW_PX;
  }
  function edgeText() {
    olderButton.hidden = !(lo > 0 || more);
    olderButton.disabled = loading;
    olderButton.textContent = loading ? "Loading older…" : "Load older";
    topEdge.dataset.start = String(lo === 0 && !more);
    emptyEl.hidden = items.length > 0 || more;
  }
  function node(item) {
    const key = keyOf(item);
    let el = rendered.get(key);
    if (!el) {
      el = render(item);
      el.dataset.key = String(key);
      rendered.set(key, el);
    }
    return el;
  }
  function drop(from, to) {
    for (let i = from; i < to; i++) {
      const key = keyOf(items[i]);
      const el = rendered.get(key);
      if (el) { el.remove(); rendered.delete(key); }
    }
  }
  // Render [from, lo) before the window, keeping the view still.
  function growUp(from) {
    if (from >= lo) return;
    const before = scroller.scrollHeight;
    const frag = document.createDocumentFragment();
    for (let i = from; i < lo; i++) frag.append(node(items[i]));
    body.prepend(frag);
    lo = from;
    scroller.scrollTop += scroller.scrollHeight - before;
    if (hi - lo > max) { drop(lo + max, hi); hi = lo + max; }
  }
  function growDown(to) {
    if (to <= hi) return;
    const frag = document.createDocumentFragment();
    for (let i = hi; i < to; i++) frag.append(node(items[i]));
    body.append(frag);
    hi = to;
    if (hi - lo > max) {
      const before = scroller.scrollHeight;
      const cut = hi - max;
      drop(lo, cut);
      lo = cut;
      scroller.scrollTop -= before - scroller.scrollHeight;
    }
  }
  async function older() {
    if (lo > 0) { growUp(Math.max(0, lo - step)); edgeText(); return; }
    if (!more || loading || !loadOlder) return;
    loading = true;
    edgeText();
    const had = items.length;
    try {
      more = Boolean(await loadOlder());
    } finally {
      loading = false;
      edgeText();
    }
    dry = items.length === had ? dry + 1 : 0;
    if (lo > 0) growUp(Math.max(0, lo - step));
    edgeText();
  }
  function check() {
    scheduled = false;
    if (scroller.scrollTop < EDGE_PX && (lo > 0 || (more && dry < DRY_LIMIT)) && !loading) {
      older().then(() => { if (scroller.scrollTop < EDGE_PX) schedule(); });
    }
    if (hi < items.length && scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < EDGE_PX) {
      growDown(Math.min(items.length, hi + step));
      schedule();
    }
    if (hi === items.length && atBottom()) setUnseen(0);
  }
  function schedule() {
    if (!scheduled) { scheduled = true; requestAnimationFrame(check); }
  }
  function setUnseen(n) {
    unseen = n;
    jump.hidden = n === 0;
    jump.textContent = n === 1 ? "1 new ↓" : `${n} new ↓`;
  }
  function toEnd() {
    if (hi < items.length || items.length - lo > max) {
      drop(lo, hi);
      lo = Math.max(0, items.length - step * 2);
      hi = lo;
      growDown(items.length);
    }
    scroller.scrollTop = scroller.scrollHeight;
    setUnseen(0);
    edgeText();
  }

  scroller.addEventListener("scroll", () => { dry = 0; schedule(); }, { passive: true });
  scroller.addEventListener("wheel", () => { dry = 0; schedule(); }, { passive: true });
  olderButton.addEventListener("click", () => { dry = 0; older(); });
  jump.addEventListener("click", toEnd);
  scroller.addEventListener("keydown", (event) => {
    if (event.key === "Home" && !event.ctrlKey) { event.preventDefault(); scroller.scrollTop = 0; schedule(); }
    if (event.key === "End" && !event.ctrlKey) { event.preventDefault(); toEnd(); }
  });
  edgeText();

  return {
    el,
    scroller,
    get size() { return items.length; },
    get rendered() { return hi - lo; },
    items() { return items; },
    // Older items (already in order), put before the first.
    prepend(older) {
      if (!older.length) return;
      items.unshift(...older);
      lo += older.length;
      hi += older.length;
      edgeText();
    },
    // New items at the end: shown now if the window reaches the end and the reader is
    // at the bottom (or nothing is shown yet); counted otherwise.
    append(newer) {
      if (!newer.length) return;
      const following = hi === items.length && (atBottom() || hi - lo < step);
      items.push(...newer);
      if (following) {
        growDown(items.length);
        scroller.scrollTop = scroller.scrollHeight;
      } else if (hi === items.length - newer.length && hi - lo + newer.length <= max) {
        growDown(items.length);
        setUnseen(unseen + newer.length);
      } else {
        setUnseen(unseen + newer.length);
      }
      edgeText();
    },
    // Replace an item (same key or not) and its element if shown.
    replace(key, item) {
      const i = items.findIndex((it) => keyOf(it) === key);
      if (i < 0) return false;
      items[i] = item;
      const old = rendered.get(key);
      if (old) {
        rendered.delete(key);
        const follow = atBottom();
        old.replaceWith(node(item));
        if (follow) scroller.scrollTop = scroller.scrollHeight;
      }
      return true;
    },
    remove(key) {
      const i = items.findIndex((it) => keyOf(it) === key);
      if (i < 0) return;
      const old = rendered.get(key);
      if (old) { old.remove(); rendered.delete(key); }
      items.splice(i, 1);
      if (i < lo) lo--;
      if (i < hi) hi--;
      edgeText();
    },
    // Render the shown items again (their state changed: a restore archived some).
    refresh() {
      const follow = atBottom();
      for (let i = lo; i < hi; i++) {
        const key = keyOf(items[i]);
        const old = rendered.get(key);
        rendered.delete(key);
        const fresh = node(items[i]);
        if (old) old.replaceWith(fresh);
      }
      if (follow) scroller.scrollTop = scroller.scrollHeight;
    },
    // Everything loaded is gone (a new session's first load); start over.
    reset(all, { hasOlder = Boolean(loadOlder) } = {}) {
      drop(lo, hi);
      items.length = 0;
      items.push(...all);
      more = hasOlder;
      // A screenful and some: the rest is drawn as the reader scrolls.
      lo = hi = Math.max(0, items.length - Math.ceil(step / 2));
      growDown(items.length);
      scroller.scrollTop = scroller.scrollHeight;
      setUnseen(0);
      edgeText();
      schedule();
    },
    setMore(value) { more = Boolean(value) && Boolean(loadOlder); edgeText(); },
    scrollToEnd: toEnd,
    followIfAtBottom() { if (hi === items.length && atBottom()) scroller.scrollTop = scroller.scrollHeight; },
    isFollowing() { return hi === items.length && atBottom(); },
    keepAtBottom(fn) {
      const follow = hi === items.length && atBottom();
      fn();
      if (follow) scroller.scrollTop = scroller.scrollHeight;
    },
  };
}
