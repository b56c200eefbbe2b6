"""The batch API through the gateway: `/v1/files` and `/v1/batches` passed to the one
replica that keeps the files and runs the jobs (`batches.url`), with API keys, tenants
kept apart and per-tenant quotas.

    owners  who owns each file and job id, and each tenant's unfinished jobs (in the store)
    api     the ASGI handler: authenticate, check ownership and quota, forward, filter lists
"""
