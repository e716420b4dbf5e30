// The start form (#/new): the registered job types from GET /v1/job-types and the input as JSON.

import { api } from "./api.js";
import { fill, h, show } from "./dom.js";
import { pretty } from "./format.js";

// Friendly first inputs for the built-in types; other types get one built from their schema.
const EXAMPLES = {
  "demo.story": { topic: "how tide mills work", steps: 3, tokens_per_step: 40, delay_ms: 40 },
  "demo.review": { action: "Send the weekly summary to the team", target: "team@example.com", delay_ms: 30 },
  "openai.responses": { model: "gpt-4o-mini", input: "Write a short poem about background queues." },
  "openai.batch": { requests: [{ custom_id: "one", body: { model: "gpt-4o-mini", input: "Say hello." } }] },
};

const BLANK = { string: "", integer: 1, number: 1, boolean: false, array: [], object: {} };

function fromSchema(schema) {
  const value = {};
  for (const name of schema?.required ?? []) {
    const prop = schema.properties?.[name] ?? {};
    const type = Array.isArray(prop.type) ? prop.type[0] : prop.type;
    value[name] = prop.default ?? prop.enum?.[0] ?? prop.minimum ?? structuredClone(BLANK[type] ?? null);
  }
  return value;
}

export function exampleInput(jobType) {
  return EXAMPLES[jobType.name] ?? fromSchema(jobType.input_schema);
}

export function newJobView(root) {
  const select = h("select", { id: "job-type", name: "type", "data-testid": "job-type", required: true });
  const description = h("p", { class: "muted", id: "job-type-help" });
  const input = h("textarea", { id: "job-input", name: "input", rows: 10, spellcheck: "false",
    "aria-describedby": "job-input-help job-input-error", "data-testid": "job-input" });
  const inputError = h("p", { id: "job-input-error", class: "field-error", role: "alert" });
  const schema = h("pre", { class: "code", tabindex: 0 });
  // disabled until the job types have loaded: a job cannot be started without one
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "start", disabled: true },
    "Start job");
  const formError = h("p", { class: "notice danger", role: "alert", "data-testid": "form-error", hidden: true });
  const form = h("form", { class: "panel form", novalidate: true, "aria-labelledby": "new-title" },
    h("label", { for: "job-type" }, "Job type"), select, description,
    h("label", { for: "job-input" }, "Input (JSON)"),
    h("p", { class: "muted", id: "job-input-help" }, "The job's input object. Ctrl+Enter starts the job."),
    input, inputError,
    h("details", {}, h("summary", {}, "Input schema"), schema),
    formError,
    h("div", { class: "actions" }, submit));
  fill(root, h("h1", { id: "new-title", tabindex: -1 }, "Start a job"), form);

  const types = new Map();
  const edits = new Map(); // what the user typed per type, kept when they switch back and forth

  function choose(name) {
    const jobType = types.get(name);
    if (!jobType) return;
    description.textContent = jobType.description || "";
    input.value = edits.get(name) ?? pretty(exampleInput(jobType));
    schema.textContent = pretty(jobType.input_schema);
    setInputError("");
  }

  function setInputError(words) {
    inputError.textContent = words;
    input.setAttribute("aria-invalid", words ? "true" : "false");
  }

  select.addEventListener("change", () => choose(select.value));
  input.addEventListener("input", () => edits.set(select.value, input.value));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!types.has(select.value)) return; // Ctrl+Enter before the types have loaded
    show(formError, false);
    let value;
    try {
      value = JSON.parse(input.value);
    } catch (err) {
      setInputError(`Not valid JSON: ${err.message}`);
      input.focus();
      return;
    }
    setInputError("");
    submit.disabled = true;
    try {
      const job = await api.createJob({ type: select.value, input: value });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      formError.textContent = err.message;
      show(formError, true);
    } finally {
      submit.disabled = false;
    }
  });

  api.jobTypes().then((list) => {
    for (const jobType of list) {
      types.set(jobType.name, jobType);
      select.append(h("option", { value: jobType.name }, jobType.name));
    }
    if (types.has("demo.story")) select.value = "demo.story";
    // what was typed before the types arrived is the input of the type now chosen
    if (edits.has("")) edits.set(select.value, edits.get(""));
    choose(select.value);
    submit.disabled = false;
  }).catch((err) => {
    formError.textContent = `Could not load the job types: ${err.message}`;
    show(formError, true);
  });
  return () => {};
}
