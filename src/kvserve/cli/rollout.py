"""`kvserve rollout start|status|pause|resume|abort`: a gateway's rollouts, through its admin API.

    kvserve rollout start chat --from v1 --to v2 --steps 5,25,50 --bake-s 300 --admin-key-file admin.key
    kvserve rollout status chat --admin-key-file admin.key

The gateway judges and moves the rollout by itself; these commands start it, show it and
let an operator pause, resume or abort it. See docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

# threshold flag -> (Thresholds field, type, help)
THRESHOLD_FLAGS: dict[str, tuple[str, type, str]] = {
    "--max-error-rate-increase": ("max_error_rate_increase", float,
                                  "B's error rate may exceed A's by this fraction (0.02 = 2 points)"),
    "--max-ttft-p95-ratio": ("max_ttft_p95_ratio", float, "B's TTFT p95 may reach this multiple of A's"),
    "--max-tpot-p95-ratio": ("max_tpot_p95_ratio", float, "B's TPOT p95 may reach this multiple of A's"),
    "--latency-slack-s": ("latency_slack_s", float, "a p95 within this many seconds of A's is never a breach"),
    "--min-requests": ("min_requests", int, "requests per version before the error rate is judged"),
    "--min-latency-samples": ("min_latency_samples", int, "successes per version before p95s are judged"),
    "--min-shadow-similarity": ("min_shadow_similarity", float, "B's mean similarity to A's answers (shadow copies)"),
    "--min-exact-match-rate": ("min_exact_match_rate", float, "share of B's greedy shadow answers identical to A's"),
    "--min-feedback-score": ("min_feedback_score", float, "B's mean client score (0 to 1)"),
    "--min-similarity-samples": ("min_similarity_samples", int, "shadow comparisons before similarity is judged"),
    "--min-exact-match-samples": ("min_exact_match_samples", int, "greedy comparisons before exact match is judged"),
    "--min-feedback-samples": ("min_feedback_samples", int, "scores of B before their mean is judged"),
}
ACTIONS = {"start": "start a rollout of a model from one version to another",
           "status": "show one model's rollout, or every model's",
           "pause": "hold a running rollout at its current share",
           "resume": "run a paused rollout again (its step bakes afresh)",
           "abort": "send all traffic back to the old version now"}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("rollout", help="start and watch a gateway's rollouts",
                                   description="Move a model from one version to another in steps, through a "
                                               "gateway's admin API; the gateway rolls back by itself on a breach.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in ACTIONS.items():
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("model", nargs="?" if name == "status" else None, help="the gateway's model name")
        action.add_argument("--gateway", default="http://127.0.0.1:8080", help="the gateway's base URL")
        action.add_argument("--admin-key-file", type=Path, default=None, help="file holding the admin key")
        action.add_argument("--admin-key", default=None, help="the admin key (prefer --admin-key-file)")
        action.add_argument("--json", action="store_true", help="print the gateway's JSON answer")
    for name in ("pause", "abort"):
        actions.choices[name].add_argument("--reason", default=None, help="recorded in the rollout's events")
    _start_flags(actions.choices["start"])
    parser.set_defaults(func=run_rollout)


def _start_flags(start: argparse.ArgumentParser) -> None:
    start.add_argument("--from", dest="baseline", required=True, help="version A (serving now)")
    start.add_argument("--to", dest="candidate", required=True, help="version B (rolled out)")
    start.add_argument("--steps", default=None, help="B's percent of traffic per step, e.g. 5,25,50")
    start.add_argument("--bake-s", type=float, default=None, help="seconds each step runs before the next")
    for flag, (_, kind, help_text) in THRESHOLD_FLAGS.items():
        start.add_argument(flag, type=kind, default=None, help=help_text)
    start.add_argument("--tag", default=None, help="on promotion, point this registry tag at the version")
    start.add_argument("--tag-ref", default=None, help="the registry version to tag (default MODEL:TO)")


def run_rollout(args: argparse.Namespace) -> int:
    try:
        method, path, body = _request(args)
        answer = _call(args, method, path, body)
    except (ValueError, OSError, httpx.HTTPError, GatewayError) as exc:
        print(f"kvserve rollout {args.action}: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        rollouts = answer["data"] if answer.get("object") == "list" else [answer]
        for rollout in rollouts:
            print(summary(rollout))
        if not rollouts:
            print("no rollouts")
    return 0


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.action == "start":
        return "POST", "/admin/rollouts", start_body(args)
    if args.action == "status":
        return "GET", "/admin/rollouts" + (f"/{quote(args.model, safe='')}" if args.model else ""), None
    body = {"reason": args.reason} if getattr(args, "reason", None) else {}
    return "POST", f"/admin/rollouts/{quote(args.model, safe='')}/{args.action}", body


def start_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "from": args.baseline, "to": args.candidate}
    if args.steps is not None:
        try:
            body["steps"] = [float(s) for s in args.steps.split(",")]
        except ValueError:
            raise ValueError(f"--steps takes percentages separated by commas, got {args.steps!r}") from None
    if args.bake_s is not None:
        body["bake_s"] = args.bake_s
    thresholds = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in THRESHOLD_FLAGS.items()}
    thresholds = {k: v for k, v in thresholds.items() if v is not None}
    if thresholds:
        body["thresholds"] = thresholds
    if args.tag is not None:
        body["tag"] = args.tag
    if args.tag_ref is not None:
        body["tag_ref"] = args.tag_ref
    return body


class GatewayError(Exception):
    """The gateway refused the call (its OpenAI-shaped error message)."""


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    key = args.admin_key
    if args.admin_key_file is not None:
        key = args.admin_key_file.read_text().splitlines()[0].strip()
    if not key:
        raise ValueError("an admin key is needed: --admin-key-file FILE (or --admin-key KEY)")
    response = httpx.request(method, args.gateway.rstrip("/") + path, json=body, timeout=30,
                             headers={"authorization": f"Bearer {key}"})
    try:
        answer = response.json()
    except ValueError:
        raise GatewayError(f"HTTP {response.status_code} from {args.gateway}: not JSON") from None
    if response.status_code != 200:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else None
        raise GatewayError(f"HTTP {response.status_code}: {message or answer}")
    return answer


def summary(rollout: dict[str, Any]) -> str:
    """One rollout in a few lines: where it is, and why."""
    steps = " -> ".join(f"{s:g}%" for s in rollout["steps"])
    weights = ", ".join(f"{v} {w:g}%" for v, w in rollout["weights"].items())
    lines = [f"{rollout['model']}: {rollout['from']} -> {rollout['to']} {rollout['phase']} "
             f"at step {rollout['step']} of {len(rollout['steps'])} ({steps}, {rollout['bake_s']:g} s each); "
             f"weights {weights}"]
    if rollout["state"]["reason"]:
        lines.append(f"  reason: {rollout['state']['reason']}")
    if "last_decision" in rollout and rollout["phase"] == "running":
        lines.append(f"  now: {rollout['last_decision']['reason']}")
    return "\n".join(lines)
