// A message's images and files (its parts), and the images a tool returned: images as
// thumbnails, files as chips that download. Their bytes are fetched from the session's
// blob route with the console's token (an <img src> cannot send it) and shown through
// object URLs, kept per blob while the page lives (a few hundred at most).

import { headers } from "../api.js";
import { fmtBytes, h } from "../ui.js";

const urls = new Map(); // blob url (API) -> object URL
const MAX_URLS = 300;

async function objectUrl(apiUrl) {
  if (urls.has(apiUrl)) return urls.get(apiUrl);
  const response = await fetch(apiUrl, { headers: headers() });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const url = URL.createObjectURL(await response.blob());
  urls.set(apiUrl, url);
  if (urls.size > MAX_URLS) {
    const [oldest, made] = urls.entries().next().value;
    urls.delete(oldest);
    URL.revokeObjectURL(made);
  }
  return url;
}

function label(p) {
  return [p.type, p.media_type, p.name, p.width && p.height ? `${p.width}x${p.height}` : null,
    p.pages ? `${p.pages} pages` : null, fmtBytes(p.size)].filter(Boolean).join(" · ");
}

function thumb(p, blobUrl) {
  const img = h("img.part-thumb", { alt: label(p), title: label(p), width: p.width || undefined,
    height: p.height || undefined, dataset: { blob: p.blob } });
  const link = h("a.part-image", { href: "#", title: label(p), "aria-label": `Open ${label(p)}` }, img);
  objectUrl(blobUrl(p.blob)).then((url) => {
    img.src = url;
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
  }, () => {
    link.replaceWith(h("span.part-missing", `${label(p)} (not available)`));
  });
  return link;
}

function chip(p, blobUrl) {
  const button = h("button.part-file.small", { type: "button", title: `Download ${label(p)}` },
    "▤ ", p.name || p.media_type || "file", h("span.muted", ` ${fmtBytes(p.size)}`));
  button.addEventListener("click", async () => {
    try {
      const a = h("a", { href: await objectUrl(blobUrl(p.blob)), download: p.name || p.blob.slice(0, 12) });
      a.click();
    } catch {
      button.disabled = true;
      button.title = "not available";
    }
  });
  return button;
}

// The parts' images and files (text parts are in the message's text already).
export function partsView(parts, blobUrl) {
  const media = (parts || []).filter((p) => p && (p.type === "image" || p.type === "file")
    && /^[0-9a-f]{64}$/.test(p.blob || ""));
  if (!media.length || !blobUrl) return null;
  return h("div.msg-parts", media.map((p) => p.type === "image" ? thumb(p, blobUrl) : chip(p, blobUrl)));
}
