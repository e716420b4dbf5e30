"""The HTTP routes, one module per resource; each module's ``routes`` list is mounted by ``api/app.py``.

    jobs.py              /v1/jobs: create, read, list, counts, cancel, review, retry, deliveries
    events.py            /v1/jobs/{id}/events: the SSE stream, resumable by cursor
    traces.py            /v1/jobs/{id}/trace: the job's spans, with tokens and cost
    ops.py               /v1/job-types, /healthz, /readyz, /metrics
    resources.py         /v1/resources: named resources, their limits and use
    workers.py           /v1/workers: the live workers, what they serve and run
    stats.py             /v1/stats: what the dashboard charts (jobs ended per minute, queues, run times)
    openai_responses.py  /v1/responses: the OpenAI-compatible background API
    openai_webhooks.py   /v1/webhooks/openai: OpenAI's webhooks for the jobs it runs
    docs.py              /openapi.json and /docs: the OpenAPI document and its reference page
"""
