// The page shell: sign-in, the router over the address fragment, and the header navigation.
//
//   #key=<key>       stores the key, then replaces the address (the fragment never reaches a server)
//   #/new            start a job
//   #/jobs           the dashboard (?status=&type=)
//   #/jobs/<id>      one job, live
//   #/workers        the live workers and what they run

import { UNAUTHORIZED_EVENT, api } from "./api.js";
import { dashboardView } from "./dashboard.js";
import { fill, h, show } from "./dom.js";
import { jobView } from "./jobview.js";
import { newJobView } from "./newjob.js";
import { workersView } from "./workers.js";
import { clearKey, getKey, setKey, takeKeyFromAddress } from "./session.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");
let dispose = () => {};
// true while the sign-in form proves a key: a 401 then means "wrong key", not "signed out"
let signingIn = false;

function route() {
  const path = location.hash.slice(1).split("?")[0] || "/new";
  const job = path.match(/^\/jobs\/([^/]+)$/);
  if (job) return { name: "job", id: decodeURIComponent(job[1]) };
  if (path === "/jobs") return { name: "jobs" };
  if (path === "/new") return { name: "new" };
  if (path === "/workers") return { name: "workers" };
  return { name: "missing" };
}

function render({ focus = true } = {}) {
  dispose();
  dispose = () => {};
  const signedIn = Boolean(getKey());
  show(nav, signedIn);
  show(signOut, signedIn);
  if (!signedIn) {
    signInView();
    return;
  }
  const current = route();
  for (const link of nav.querySelectorAll("a")) {
    const active = link.dataset.route === current.name;
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = { new: "Start a job", jobs: "Jobs", job: "Job", workers: "Workers", missing: "Not found" }[current.name]
    + " — Backlane";
  if (current.name === "job") dispose = jobView(view, current.id);
  else if (current.name === "jobs") dispose = dashboardView(view);
  else if (current.name === "new") dispose = newJobView(view);
  else if (current.name === "workers") dispose = workersView(view);
  else fill(view, h("h1", { tabindex: -1 }, "Not found"), h("p", {}, h("a", { href: "#/jobs" }, "See all jobs")));
  if (focus) view.querySelector("h1")?.focus({ preventScroll: true });
}

function signInView(reason = "") {
  document.title = "Sign in — Backlane";
  const input = h("input", { id: "api-key", type: "password", autocomplete: "current-password",
    required: true, "data-testid": "api-key", "aria-describedby": "api-key-help" });
  const problem = h("p", { class: "field-error", role: "alert", "data-testid": "sign-in-reason" }, reason);
  const form = h("form", { class: "panel form narrow" },
    h("label", { for: "api-key" }, "API key"), input,
    h("p", { class: "muted", id: "api-key-help" },
      "Kept in this browser only. ", h("code", {}, "backlane dev"), " prints an address that signs you in."),
    problem,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    setKey(key);
    signingIn = true;
    try {
      await api.jobTypes(); // proves the key before leaving the form
      render();
    } catch (err) {
      if (getKey()) problem.textContent = err.message; // a 401 already cleared the key
    } finally {
      signingIn = false;
    }
  });
  fill(view, h("h1", { tabindex: -1 }, "Sign in"), form);
  input.focus();
}

window.addEventListener(UNAUTHORIZED_EVENT, (event) => {
  const wasSignedIn = Boolean(getKey()) && !signingIn;
  if (!getKey() && !signingIn) return; // one answer already signed the page out; the others add nothing
  clearKey();
  dispose();
  dispose = () => {};
  show(nav, false);
  show(signOut, false);
  const said = event.detail?.message ? ` (the server said: “${event.detail.message}”)` : "";
  // a key that worked here before and is refused now has expired or been revoked: say so, and that
  // signing in again comes back to the same page (the address is kept)
  signInView(wasSignedIn
    ? `You were signed out: the server no longer accepts this browser's API key${said}. It may have ` +
      "expired or been revoked. Enter a current key to go back to this page."
    : "That API key was not accepted. Enter a valid key.");
});

signOut.addEventListener("click", () => {
  clearKey();
  render();
});

window.addEventListener("hashchange", () => {
  takeKeyFromAddress(); // a sign-in link opened in a tab that was already open
  render();
});

// the fragment is the router's: the skip link moves focus instead of changing the address
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  view.focus();
});

takeKeyFromAddress();
render({ focus: false });
