"""The commands of a combiner in the cloud: presigned URLs (``url``, ``commit``), retention (``prune``,
``lifecycle``). Each works through the store's own methods, so any backend that has them serves."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

from storage import Retention, check_model_id
from storage.cli.commands import Context, build_metadata
from storage.cli.exits import EXIT_OK, EXIT_USAGE, CommandError
from storage.cli.render import human_size
from storage.cli.stores import underlying_store


def _age(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


def cmd_url(args: argparse.Namespace, ctx: Context) -> int:
    check_model_id(args.id)
    with ctx.store() as store:
        if args.put:
            if args.size is None or args.sha256 is None:
                raise CommandError("url --put needs --size and --sha256 of the model to be uploaded", EXIT_USAGE)
            plan = store.presign_put(args.id, size=args.size, sha256=args.sha256, expires=args.expires)
            print(json.dumps(plan.as_dict(), indent=2))
            ctx.say(
                f"{len(plan.requests)} request(s) for {human_size(plan.size)}; once they are sent: "
                f"modelstorage commit {args.id}"
            )
            return EXIT_OK
        request = store.presign_get(args.id, expires=args.expires)
    # A GET that needs headers (a customer key) is one a bare URL cannot make: then the whole request.
    print(json.dumps(request.as_dict(), indent=2) if args.json or request.headers else request.url)
    return EXIT_OK


def cmd_commit(args: argparse.Namespace, ctx: Context) -> int:
    check_model_id(args.id)
    metadata = build_metadata(args.meta_json, args.meta or [], "--meta-json", "put every key in --meta-json")
    with ctx.store() as store:
        stat = store.commit_upload(args.id, metadata, overwrite=not args.no_overwrite)
    ctx.say(f"committed {stat.model_id}: {human_size(stat.size)}, sha256 {stat.sha256}")
    return EXIT_OK


def _rule(args: argparse.Namespace) -> Retention:
    where = dict(args.where) if args.where else None
    return Retention(match=args.match, where=where, keep_last=args.keep_last, older_than=_age(args.older_than))


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    if args.keep_last is None and args.older_than is None:
        raise CommandError("prune needs --keep-last N, --older-than AGE, or both", EXIT_USAGE)
    with ctx.store() as store:
        removed = store.prune(_rule(args), dry_run=args.dry_run)
    for model_id in removed:
        print(model_id)
    ctx.say(f"{'would delete' if args.dry_run else 'deleted'} {len(removed)} model(s)")
    return EXIT_OK


def cmd_lifecycle(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.store() as store:
        target = underlying_store(store)
        if not hasattr(target, "lifecycle_rules"):
            raise CommandError(f"lifecycle rules are an object store's; {store!r} has none", EXIT_USAGE)
        rules = target.lifecycle_rules(
            expire_after=_age(args.older_than),
            where=dict(args.where) if args.where else None,
            abort_uploads_after=_age(args.abort_uploads_after) or timedelta(days=1),
        )
        if args.apply:
            target.apply_lifecycle(rules)
    print(json.dumps({"Rules": rules}, indent=2))
    ctx.say(f"set {len(rules)} lifecycle rule(s) on the bucket" if args.apply else "add --apply to set them")
    return EXIT_OK


CLOUD_COMMANDS = {"url": cmd_url, "commit": cmd_commit, "prune": cmd_prune, "lifecycle": cmd_lifecycle}
