"""Agent command line: probe, run, case, version. The only place that picks an exit code.

Usage errors print one line and exit schema.EXIT_USAGE; bugs keep their traceback and exit
schema.EXIT_INTERNAL.
"""

import argparse
import json
import os
import sys
import traceback

from agent import AGENT_VERSION, schema


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, no usage dump: the controller shows stderr to a person verbatim.
        sys.stderr.write("agent: usage error: %s (try --help)\n" % message)
        sys.exit(schema.EXIT_USAGE)


def build_parser():
    parser = _Parser(prog="agent", description="benchfleet device agent %s" % AGENT_VERSION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("probe", help="print this device's facts as JSON")
    p.add_argument("--root", default="/", help="filesystem root to read (tests use a fake tree)")
    p = sub.add_parser("run", help="run every case of a job (the supervisor)")
    p.add_argument("job")
    p.add_argument("--out", required=True)
    p = sub.add_parser("case", help="run one case of a job in this process (used by run)")
    p.add_argument("job")
    p.add_argument("case_id")
    p.add_argument("--out", required=True)
    p = sub.add_parser("lock", help="print whether WORKDIR's agent.lock is held, and by whom")
    p.add_argument("workdir")
    sub.add_parser("version", help="print the agent version")
    return parser


def _emit(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _dispatch(args):
    if args.command == "version":
        _emit(AGENT_VERSION)
        return schema.EXIT_OK
    if args.command == "probe":
        from agent import probe
        _emit(json.dumps(probe.probe(args.root), sort_keys=True))
        return schema.EXIT_OK
    if args.command == "lock":
        from agent import runner
        _emit(json.dumps(runner.lock_status(args.workdir), sort_keys=True))
        return schema.EXIT_OK
    if args.command == "run":
        from agent import runner
        return runner.run_job(args.job, args.out)
    from agent import worker
    if not os.path.isdir(args.out):
        sys.stderr.write("agent: usage error: --out %s is not a folder\n" % args.out)
        return schema.EXIT_USAGE
    try:
        return worker.run_case(args.job, args.case_id, args.out)
    except (OSError, ValueError) as exc:  # job unreadable or case id unknown, before any result
        sys.stderr.write("agent: usage error: %s\n" % exc)
        return schema.EXIT_USAGE


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("a command is required: probe, run, case, lock or version")
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return schema.EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        return schema.EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
