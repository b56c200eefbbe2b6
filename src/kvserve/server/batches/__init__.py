"""Batch jobs: `/v1/files` and `/v1/batches` as OpenAI shapes them, run at the lowest priority.

    settings  where files live, how big an upload may be, how many lines run at once
    stores    where the durable state lives (files, batches, every line's answer), by URL:
    store     ... in SQLite under the data directory (the default)
    redis_store ... in Redis
    lines     an input JSONL file checked line by line (bad lines become error-file rows)
    runner    the asyncio task that takes jobs through their statuses
    service   what the routes hold: store, runner, the data directory's lock
    upload    a multipart upload read under the size limit
    routes    the HTTP handlers

A line's answer is committed to the store before it counts; the output and error files are
written once, from those rows, when the job finalizes. A server killed mid-job resumes
from the lines that have no answer, so every line is answered exactly once.
"""
