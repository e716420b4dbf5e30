// The API key lives in localStorage only. A sign-in link carries it in the fragment (#key=…), which
// browsers never send to a server; it is stripped from the address as soon as it is read.

const STORAGE = "backlane.apiKey";

export function getKey() {
  try {
    return localStorage.getItem(STORAGE);
  } catch {
    return null; // storage disabled: the user will be asked each time
  }
}

export function setKey(key) {
  localStorage.setItem(STORAGE, key);
}

export function clearKey() {
  localStorage.removeItem(STORAGE);
}

/** Reads "#key=…" (optionally followed by "&/jobs/…"), stores it, and rewrites the address without it. */
export function takeKeyFromAddress() {
  const hash = location.hash.slice(1);
  if (!hash.startsWith("key=")) return false;
  const [pair, ...rest] = hash.split("&");
  const key = decodeURIComponent(pair.slice(4)).trim();
  if (key) setKey(key);
  const route = rest.join("&") || "/new";
  history.replaceState(null, "", `${location.pathname}${location.search}#${route}`);
  return Boolean(key);
}
