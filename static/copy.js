// A "Copy" button for a value shown shortened (a job id): the clipboard API where the page may use it
// (https or localhost), else a hidden text area and execCommand, which works on a plain-http address.

import { h } from "./dom.js";

const COPIED_MS = 1500;

async function writeText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea", { readonly: true, "aria-hidden": "true", class: "visually-hidden" });
  area.value = text;
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand("copy")) throw new Error("copy refused");
  } finally {
    area.remove();
  }
}

/** A button that copies `text`; `label` names what it copies for a screen reader ("job id …"). */
export function copyButton(text, label) {
  const button = h("button", { type: "button", class: "copy", "data-testid": "copy-id", "data-copy": text,
    "aria-label": `Copy ${label}`, title: `Copy ${label}` }, "Copy");
  button.addEventListener("click", async (e) => {
    e.stopPropagation(); // a table row opens its job on click: copying is not opening
    try {
      await writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, COPIED_MS);
  });
  return button;
}
