"""The web console: static pages (no build step, no CDN) served by the gateway and by
`kvserve serve` under /console/, talking to the same APIs a script would."""
