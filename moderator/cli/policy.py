"""`moderator policy validate|schema|test|backtest`: check policies, dry-run them, replay recorded decisions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from moderator.cli.errors import fail
from moderator.cli.output import stdout_console
from moderator.policy.engine import PolicyVerdict
from moderator.settings import Settings

console = stdout_console()

PolicyDirOption = Annotated[
    Path | None, typer.Option("--policy-dir", help="Directory of the serving policies (default: MODERATOR_POLICY_DIR)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]


def validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Policy directories or files (default: policy dir)")
    ] = None,
    policy_dir: PolicyDirOption = None,
) -> None:
    """Check policies; errors name file, line and field. Exit code 1 when any is invalid (for CI)."""
    from moderator.policy.loader import PolicyError, load_candidate, load_policy_set, parse_policy_source

    settings = Settings()
    failed = False
    for path in paths or [policy_dir or settings.policy_dir]:
        alone = ""
        try:
            if path.is_dir():
                policies = list(load_policy_set(path).policies.values())
            else:
                policy_set, _ = load_candidate(path, policy_dir or path.parent)
                # Standing alone, the candidate is checked as its own default: label it by what it declares.
                policies = [parse_policy_source(path.read_text(encoding="utf-8"), str(path)).policy]
                alone = ", checked alone" if len(policy_set.policies) == 1 else ""
        except PolicyError as exc:
            failed = True
            typer.echo(str(exc), err=True)
            continue
        except OSError as exc:
            failed = True
            typer.echo(f"{path}: {exc.strerror or exc}", err=True)
            continue
        for policy in policies:
            role = (f"shadow of {policy.shadow_of}" if policy.shadow_of else
                    "selected by applies_when" if policy.applies_when is not None else "default")
            typer.echo(f"ok  {path}: {policy.name} v{policy.version} ({role}{alone}, {len(policy.rules)} rules)")
    if failed:
        raise typer.Exit(1)


def schema(
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout")] = None,
) -> None:
    """Print the JSON Schema of policy files (for editors: yaml-language-server, VS Code, IntelliJ)."""
    from moderator.policy.schema import policy_json_schema

    text = json.dumps(policy_json_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


EXPECTABLE = ("allow", "review", "block", "dead-letter")


def _read_posts(path: Path, categories: list[str]) -> list[dict[str, Any]]:
    """The posts of a JSONL file; a line that is not a post, or whose ``scores`` or ``expect`` would be
    silently ignored (a misspelled category, an unknown action), ends the command naming file:line."""
    posts: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            fail(f"{where}: not valid JSON ({exc}); each line is one post as a JSON object")
        if not isinstance(data, dict):
            fail(f"{where}: each line must be a JSON object (a post), not {type(data).__name__}")
        _check_expect(where, data.get("expect"))
        _check_scores(where, data.get("scores"), categories)
        posts.append(data)
    return posts


def _check_expect(where: str, expect: object) -> None:
    if expect is not None and expect not in EXPECTABLE:
        fail(f"{where}: expect: {expect!r} is not an outcome; use one of {', '.join(EXPECTABLE)}")


def _check_scores(where: str, scores: object, categories: list[str]) -> None:
    import difflib

    if scores is None:
        return
    if not isinstance(scores, dict):
        fail(f"{where}: scores: must be an object of category -> score, e.g. {{\"{categories[0]}\": 0.9}}")
    for category, score in scores.items():
        if category not in categories:
            close = difflib.get_close_matches(category, categories, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            fail(f"{where}: scores: unknown category {category!r}; {hint}the policy's categories are "
                 f"{', '.join(categories)}")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            fail(f"{where}: scores.{category}: {score!r} is not a number between 0 and 1")


async def _dry_run(settings: Settings, policy_file: Path, posts_file: Path) -> list[dict[str, Any]]:
    """Decide each post under the policy with the service's own pipeline stages, publishing nothing.

    Scores come from the line's ``scores`` or from the model (loaded only if a post needs it); no
    score cache and no escalation, so a dry run never changes what the service would find in Redis.
    """
    from moderator.decisions.schema import DecisionSource
    from moderator.ingest.errors import IngestError
    from moderator.model.loader import LoadedOnFirstUse
    from moderator.pipeline import PostHandler
    from moderator.policy.loader import load_candidate
    from moderator.policy.store import PolicyStore
    from moderator.service import connect_redis
    from moderator.telemetry.instrument import Telemetry

    policy_set, policy = load_candidate(policy_file, settings.policy_dir)
    redis = connect_redis(settings) if policy.bank_limits and settings.redis_url else None
    handler = PostHandler.build(settings, LoadedOnFirstUse(settings, policy_set.head_spec()), PolicyStore(policy_set),
                                redis, None, Telemetry([s.value for s in DecisionSource]), score_cache=False,
                                escalation=False)

    async def dry_run(data: dict[str, Any]) -> dict[str, Any]:
        given, expect = data.pop("scores", None), data.pop("expect", None)
        row: dict[str, Any] = {"post_id": str(data.get("post_id", "?")), "expect": expect}
        scores = {str(k): float(v) for k, v in given.items()} if given is not None else None
        try:
            decided = await handler.moderate(orjson.dumps(data), policy=policy, scores=scores)
        except IngestError as exc:
            return row | {"action": "dead-letter", "rule": exc.reason.value, "label": exc.detail, "source": "ingest"}
        source = ("bank" if decided.decision.source is DecisionSource.BANK else
                  "given" if scores is not None else "model")
        return row | _verdict_row(decided.verdict) | {"source": source, "scores": decided.decision.scores}

    try:
        # Concurrently, so the posts that need the model share its batches.
        return list(await asyncio.gather(*(dry_run(data) for data in _read_posts(posts_file, policy_set.head_spec().names))))
    finally:
        await handler.close()
        if redis is not None:
            await redis.aclose()


def _verdict_row(verdict: PolicyVerdict) -> dict[str, Any]:
    deciding = verdict.deciding
    return {"action": verdict.action.value, "rule": deciding.rule if deciding else "(default action)",
            "label": deciding.label if deciding else None,
            "fired": [r.rule for r in verdict.reasons]}


def test(
    policy_file: Annotated[Path, typer.Argument(help="Policy file to try", exists=True, dir_okay=False)],
    posts: Annotated[Path, typer.Option("--posts", help="JSONL of posts; a line may carry \"scores\" and "
                                                        "\"expect\" (the action it should get)", exists=True)],
    policy_dir: PolicyDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Dry-run a policy on sample posts: each post's action and the rule that fired.

    Exit code 1 when a post's action differs from its "expect".
    """
    from moderator.policy.loader import PolicyError

    settings = Settings()
    if policy_dir is not None:
        settings = settings.model_copy(update={"policy_dir": policy_dir})
    try:
        rows = asyncio.run(_dry_run(settings, policy_file, posts))
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    wrong = [r for r in rows if r["expect"] is not None and r["expect"] != r["action"]]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
    else:
        table = Table(title=f"{policy_file}: {len(rows)} posts")
        for column in ("post", "action", "rule", "label", "scores from", "expected"):
            table.add_column(column)
        for row in rows:
            mark = "" if row["expect"] is None else ("ok" if row["expect"] == row["action"] else f"✗ {row['expect']}")
            table.add_row(row["post_id"], row["action"], row["rule"], row.get("label") or "", row["source"], mark)
        console.print(table)
    if wrong:
        typer.echo(f"{len(wrong)} post(s) did not get the expected action: "
                   + ", ".join(f"{r['post_id']} ({r['action']}, expected {r['expect']})" for r in wrong), err=True)
        raise typer.Exit(1)


async def _recorded(settings: Settings, since: str, until: str | None, group: str | None) -> list[Any]:
    from moderator.pipeline.recording import ScoreLog, log_key
    from moderator.policy.backtest import parse_since
    from moderator.service import connect_redis

    if not settings.redis_url:
        fail("recorded decisions live in Redis: set MODERATOR_REDIS_URL=redis://HOST:PORT, or give --scores FILE")
    redis = connect_redis(settings)
    assert redis is not None
    try:
        score_log = ScoreLog(redis, log_key(group or settings.consumer_group), settings.score_log_max)
        return [r async for r in score_log.read(parse_since(since), parse_since(until) if until else None)]
    finally:
        await redis.aclose()


def backtest(
    policy_file: Annotated[Path, typer.Argument(help="Candidate policy file", exists=True, dir_okay=False)],
    since: Annotated[str, typer.Option("--since", help="Replay decisions since: 24h, 7d, or an ISO time")] = "24h",
    until: Annotated[str | None, typer.Option("--until", help="... until this time (default: now)")] = None,
    scores: Annotated[
        Path | None, typer.Option("--scores", help="Read records from this JSONL file, not Redis")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="Deployment (consumer group) whose decisions "
                                                              "to replay (default: MODERATOR_CONSUMER_GROUP)")] = None,
    all_policies: Annotated[bool, typer.Option("--all-policies", help="Also replay posts another policy "
                                                                      "decided")] = False,
    examples: Annotated[int, typer.Option("--examples", help="Examples shown per category")] = 3,
    policy_dir: PolicyDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay recorded scores under a candidate policy: how many actions change, by category, with examples."""
    from moderator.pipeline.recording import read_jsonl
    from moderator.policy.backtest import backtest as run_backtest
    from moderator.policy.loader import PolicyError, load_candidate

    settings = Settings()
    try:
        _, policy = load_candidate(policy_file, policy_dir or settings.policy_dir)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    from redis.exceptions import RedisError

    try:
        records = read_jsonl(scores) if scores is not None else asyncio.run(_recorded(settings, since, until, group))
    except RedisError as exc:
        fail(f"cannot reach Redis at {settings.redis_url} ({exc}): start it, or fix MODERATOR_REDIS_URL")
    report = run_backtest(policy, records, all_policies=all_policies, examples_per_category=examples)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    typer.echo(f"{policy.name} v{policy.version}: replayed {report.replayed} recorded decisions "
               f"({report.skipped} by other policies skipped); {report.changed} actions would change")
    if not report.changed:
        return
    moves = Table(title="changes")
    moves.add_column("before -> after")
    moves.add_column("posts", justify="right")
    for key, count in sorted(report.transitions.items()):
        moves.add_row(key, str(count))
    console.print(moves)
    table = Table(title="by category")
    for column in ("category", "changed", "examples (post: before -> after, rule)"):
        table.add_column(column)
    for category, count in sorted(report.by_category.items(), key=lambda kv: -kv[1]):
        shown = "; ".join(f"{c.post_id}: {c.before} -> {c.after}, {c.rule_after or c.rule_before}"
                          for c in report.examples.get(category, []))
        table.add_row(category, str(count), shown)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the `policy` sub-app to the CLI."""
    policy = typer.Typer(no_args_is_help=True, help="Validate, dry-run and backtest moderation policies.")
    policy.command("validate")(validate)
    policy.command("schema")(schema)
    policy.command("test")(test)
    policy.command("backtest")(backtest)
    app.add_typer(policy, name="policy")
