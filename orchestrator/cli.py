"""The `benchfleet` command line: the only place that prints results and errors and picks the exit
code (0 every case ok or skipped, 1 some case failed, 2 bad input or usage, 3 a regression found
by compare or run --compare-to, 75 the same sweep already running, 130 interrupted).

Heavy imports (tensorflow, fabric, paramiko) happen inside the verbs, so --help starts fast.
With --json a verb prints one JSON document on stdout; progress always goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from orchestrator import __version__
from orchestrator.cache import cache_root
from orchestrator.config.inventory import DEFAULT_INVENTORY
from orchestrator.errors import ConfigError, OrchestratorError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_REGRESSION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

DESCRIPTION = """\
Benchmark ML inference across devices: a suite (suites/*.yaml) runs on the devices of an
inventory (inventory/*.yaml, one file per device) and gives one comparison table.

  benchfleet run suites/quickstart.yaml -i inventory/localhost.yaml   this machine, no SSH
  benchfleet devices add pi4 --host 192.168.1.42 --user pi            add a device
  benchfleet plan suites/movenet.yaml                                 what would run where
"""


def _inventory_paths(args):
    return args.inventory or list(DEFAULT_INVENTORY)


def _inventory(args):
    from orchestrator.config.inventory import load_inventory
    return load_inventory(_inventory_paths(args))


def _device_list(text):
    return [d.strip() for d in text.split(",") if d.strip()] if text else None


def _print_json(doc) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def cmd_devices_list(args) -> int:
    from orchestrator import devices
    inv = _inventory(args)
    if args.json:
        _print_json(devices.to_json(inv))
    else:
        print("\n".join(devices.list_lines(inv, verbose=args.verbose)))
    return EXIT_OK


def cmd_devices_trust(args) -> int:
    from orchestrator.transport.hostkeys import trust_host_key
    for dev in _inventory(args).select([args.name]):
        replaced = []
        fingerprint = trust_host_key(dev, dev.known_hosts_path, replace=args.replace,
                                     replaced=replaced)
        if replaced:
            print("%s: replaced %s with %s (in %s)" % (dev.name, "; ".join(replaced), fingerprint,
                                                      dev.known_hosts_path))
        else:
            print("%s: trusted %s (in %s)" % (dev.name, fingerprint, dev.known_hosts_path))
    return EXIT_OK


def cmd_devices_probe(args) -> int:
    from orchestrator.probes import probe_devices
    inv = _inventory(args)
    outcomes = probe_devices(inv.select([args.name]) if args.name else list(inv))
    failed = any(error for _, error in outcomes.values())
    if args.json:
        _print_json({name: {"probe": probe, "error": error}
                     for name, (probe, error) in outcomes.items()})
        return EXIT_FAILED if failed else EXIT_OK
    from orchestrator import devices
    for name, (probe, error) in outcomes.items():
        if error:
            print(_shown("%s: probe failed: %s" % (name, error)), file=sys.stderr)
            continue
        can, cannot = devices.capabilities(inv[name], probe)
        print(_shown("\n".join(devices.capability_lines(name, can, cannot))))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_devices_add(args) -> int:
    from orchestrator import devices
    from orchestrator.probes import probe_device
    from orchestrator.transport.hostkeys import describe_key, trust_host_key
    fields = {k: v for k, v in (("host", args.host), ("user", args.user), ("port", args.port),
                                 ("ssh_alias", args.ssh_alias),
                                 ("identity_file", args.identity_file),
                                 ("known_hosts", args.known_hosts), ("python", args.python),
                                 ("workdir", args.workdir), ("tags", _device_list(args.tags)),
                                 ("accelerators", _device_list(args.accelerators)))
              if v is not None}
    device, path = devices.new_device(args.name, fields, args.inventory_dir)

    def confirm(target, key):
        print("%s: %s:%d offers host key %s" % (device.name, target.host, target.port,
                                                describe_key(key)), file=sys.stderr)
        return args.yes or devices.ask("Trust it and add it to %s?" % target.known_hosts)
    fingerprint = trust_host_key(device, device.known_hosts_path, confirm=confirm)
    devices.write_device(device, path)
    print("%s: trusted %s; wrote %s" % (device.name, fingerprint, path))
    if args.no_probe:
        return EXIT_OK
    probe, error = probe_device(device)
    if error:
        print(_shown("%s: probe failed: %s" % (device.name, error)), file=sys.stderr)
        return EXIT_FAILED
    can, cannot = devices.capabilities(device, probe)
    print(_shown("\n".join(devices.capability_lines(device.name, can, cannot))))
    return EXIT_OK


def cmd_validate(args) -> int:
    from orchestrator.config.suite import load_suite
    problems = []
    inv = None
    try:
        inv = _inventory(args)
    except ConfigError as exc:
        problems += exc.problems
    for path in args.suites:
        try:
            load_suite(path)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    print("ok: %d devices, %d suites" % (len(inv), len(args.suites)))
    return EXIT_OK


def cmd_plan(args) -> int:
    from orchestrator.config.suite import load_suite
    from orchestrator.plan import plan
    from orchestrator.probes import cached_probes
    suite = load_suite(args.suite)
    inv = _inventory(args)
    the_plan = plan(suite, inv, devices=_device_list(args.devices), probes=cached_probes(inv))
    if args.json:
        _print_json(the_plan.to_json())
    else:
        print(_shown(the_plan.to_text()))
    return EXIT_OK


def _run_options(p):
    p.add_argument("--forks", type=_positive_int, default=32, metavar="N",
                   help="devices in session at once; the others wait their turn (default 32)")
    p.add_argument("--parallel", type=_positive_int, dest="forks", help=argparse.SUPPRESS)
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="how long to wait for a device busy with another run (default 0: do not "
                        "wait; its cases are skipped, naming who holds it)")
    _history_option(p)
    p.add_argument("--compare-to", metavar="baseline|RUN", help="at the end, compare this run "
                   "with the baseline (the last N runs of the suite on each device) or a run id "
                   "or folder; exit 3 when a case got slower")
    _compare_options(p)
    p.add_argument("--on-regression", metavar="CMD", help="with --compare-to: a shell command "
                   "run when a case got slower, the comparison as JSON on its stdin")


def _history_option(p):
    p.add_argument("--history", metavar="URL", help="the history database: a SQLAlchemy URL "
                   "(postgresql://user@host/db, sqlite:///path) or a file path; default "
                   "$BENCHFLEET_HISTORY, else RESULTS_DIR/history.sqlite; off = none")


def _compare_options(p):
    p.add_argument("--threshold", type=_fraction, default=None, metavar="FRACTION",
                   help="smallest p50 change called faster or slower (default 0.05 = 5%%)")
    p.add_argument("--baseline-runs", type=_positive_int, default=None, metavar="N",
                   help="runs in the baseline (default 5)")


def _fraction(text):
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        value = -1.0
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError("expected a fraction such as 0.05 or 5%%, got %r" % text)
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at least 1, got %r" % text)
    return value


def cmd_run(args) -> int:
    from orchestrator.run import AfterRun, render_summary, resume_run, run_suite
    if args.on_regression and not args.compare_to:
        raise ConfigError("--on-regression needs --compare-to (baseline or a run)")
    after = AfterRun(history=args.history, compare_to=args.compare_to, threshold=args.threshold,
                     baseline_runs=args.baseline_runs)
    if args.resume:
        if args.suite or args.devices or args.inventory:
            raise ConfigError("--resume %s: a resume runs the suite, inventory and devices the "
                              "run started with (its manifest); give no SUITE, -i or --devices"
                              % args.resume)
        summary = resume_run(args.resume, max_parallel=args.forks, wait_s=args.wait, after=after)
    elif not args.suite:
        raise ConfigError("run: give a SUITE (e.g. suites/quickstart.yaml), or --resume RUN_DIR")
    else:
        summary = run_suite(args.suite, _inventory_paths(args), devices=_device_list(args.devices),
                            results_dir=args.results_dir, max_parallel=args.forks,
                            wait_s=args.wait, after=after)
    if args.json:
        _print_json(summary.to_json())
    else:
        print(render_summary(summary))
    if summary.comparison is not None:
        from orchestrator.compare import render as render_comparison
        if not args.json:
            print("\n" + render_comparison(summary.comparison))
        if summary.comparison["regression"]:
            _hook(args.on_regression, summary.comparison)
            return EXIT_REGRESSION
    elif args.compare_to:
        return EXIT_CONFIG   # the comparison failed after the run (the warning says why)
    return EXIT_FAILED if summary.failed else EXIT_OK


def _hook(command, doc) -> None:
    from orchestrator.compare import on_regression
    if command:
        problem = on_regression(command, doc)
        if problem:
            print(_shown("warning: %s" % problem), file=sys.stderr)


def _open_history(args, required=True, make=True):
    """The History of --history / $BENCHFLEET_HISTORY / RESULTS_DIR/history.sqlite. None when it
    is off and not required (ConfigError when required), or, with make=False (a reader), when
    it is a SQLite file not made yet: reading makes no empty database."""
    from orchestrator.history import History, history_url, sqlite_missing
    url = history_url(args.history, args.results_dir)
    if url is None:
        if required:
            raise ConfigError("history is off (--history off or BENCHFLEET_HISTORY=off): give "
                              "--history URL")
        return None
    if not make and sqlite_missing(url):
        return None
    return History(url)


def cmd_compare(args) -> int:
    from orchestrator import compare
    baseline = args.a == "baseline"   # two runs need no history; a baseline is read from one
    history = _open_history(args, required=baseline, make=baseline)
    try:
        doc = compare.compare(args.a, args.b, results_dir=args.results_dir, history=history,
                              threshold=args.threshold or compare.DEFAULT_THRESHOLD,
                              baseline_runs=args.baseline_runs or compare.DEFAULT_BASELINE_RUNS)
    finally:
        if history is not None:
            history.close()
    if args.json:
        _print_json(doc)
    else:
        print(_shown(compare.render(doc)))
    if doc["regression"]:
        _hook(args.on_regression, doc)
        return EXIT_REGRESSION
    return EXIT_OK


def cmd_history(args) -> int:
    from orchestrator import trends
    if args.action not in (None, "import"):
        raise ConfigError("history %s: unknown action; `benchfleet history import [PATH...]` "
                          "ingests run folders, `benchfleet history [--device D] [--case C]` "
                          "shows the trends" % args.action)
    history = _open_history(args, make=args.action == "import")
    if history is None:   # nothing stored yet, and the trends make no empty database
        if args.json:
            _print_json([])
        else:
            print(_shown(trends.render([])))
        return EXIT_OK
    with history:
        if args.action == "import":
            done = {"runs": [], "added": 0, "known": 0, "skipped": [], "warnings": []}
            for path in args.paths or [args.results_dir]:
                got = history.import_path(path)
                for key in ("runs", "skipped", "warnings"):
                    done[key] += got[key]
                done["added"] += got["added"]
                done["known"] += got["known"]
            if args.json:
                _print_json(done)
                return EXIT_OK
            for line in done["warnings"]:
                print(_shown("warning: %s" % line), file=sys.stderr)
            for skip in done["skipped"]:
                print(_shown("skipped %s: %s" % (skip["path"], skip["why"])), file=sys.stderr)
            print(_shown("%d run(s): %d result(s) added, %d already in %s" % (
                len(done["runs"]), done["added"], done["known"], history.url)))
            return EXIT_OK
        series = trends.trends(history, suite=args.suite, device=args.device, case=args.case,
                               runs=args.runs)
    if args.json:
        _print_json(series)
    else:
        print(_shown(trends.render(series)))
    return EXIT_OK


def cmd_report(args) -> int:
    from orchestrator.rundir import load_run
    from orchestrator.run import rewrite_report, write_tables
    loaded = load_run(args.run)
    for line in loaded.warnings:
        print(_shown("warning: %s" % line), file=sys.stderr)
    summary = loaded.summary()
    summary.suite = loaded.suite_name
    write_tables(summary)
    written = [summary.run_dir / "results.csv", summary.run_dir / "comparison.md"]
    if args.html:
        written.append(rewrite_report(summary, history=args.history))
    print(_shown("%d result(s) of %s: %s" % (len(summary.results), summary.run_id,
                                             ", ".join(str(p) for p in written))))
    return EXIT_OK


def cmd_runs(args) -> int:
    from orchestrator.runs import list_runs, run_lines
    rows = list_runs(args.results_dir)
    if args.json:
        _print_json(rows)
    else:
        print(_shown("\n".join(run_lines(rows))))
    return EXIT_OK


def cmd_devices_status(args) -> int:
    from orchestrator.status import device_status, status_lines
    inv = _inventory(args)
    states = device_status(inv.select([args.name]) if args.name else list(inv))
    if args.json:
        _print_json(states)
    else:
        print(_shown("\n".join(status_lines(states))))
    return EXIT_FAILED if any(s.get("error") for s in states.values()) else EXIT_OK


def cmd_energy_attach(args) -> int:
    from orchestrator.energy import attach
    done = attach(args.run_dir, args.meter, fmt=args.format, device=args.device, start=args.start,
                  voltage=args.voltage, subtract_idle=args.subtract_idle)
    for line in done.warnings:
        print(_shown("warning: %s" % line), file=sys.stderr)
    if args.json:
        _print_json(done.to_json())
        return EXIT_OK
    print(_shown("%s: %s, %d row(s) spanning %.1f s" % (
        done.meter.path, done.meter.method, len(done.meter.t),
        done.meter.span[1] - done.meter.span[0])))
    for line in done.lines:
        print(_shown("  " + line))
    tables = "results.csv and comparison.md rewritten" if done.tables else "tables not rewritten"
    print(_shown("%d result(s) of %s given meter energy, %d not covered by the log; %s (%s)" % (
        len(done.changed), done.device, len(done.uncovered), tables, args.run_dir)))
    return EXIT_OK


def _unix_seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value == value or value < 1e8 or value == float("inf"):
        raise argparse.ArgumentTypeError("expected unix seconds (e.g. 1767225600.25), got %r"
                                         % text)
    return value


def _volts(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1000:
        raise argparse.ArgumentTypeError("expected the supply voltage in volts (e.g. 5.0), got %r"
                                         % text)
    return value


def _energy_parser(sub):
    from orchestrator.energy import FORMATS
    energy = sub.add_parser("energy", help="attach an external power meter's log to a run")
    esub = energy.add_subparsers(dest="energy_verb", required=True, metavar="ACTION")
    p = _with_json(esub.add_parser(
        "attach", help="fill energy from a meter log (PPK2, Monsoon, CSV) into every ok result "
                       "of a device whose measured window it covers; rewrite the tables"),
        "what was attached")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--meter", required=True, metavar="FILE.csv", help="the meter's log")
    p.add_argument("--format", choices=FORMATS, help="default: guessed from the header (ppk2: "
                   "Timestamp(ms),Current(uA); monsoon: Time(s),Main(mA),Main Voltage(V); csv: "
                   "a unix time column and power, or current and voltage)")
    p.add_argument("--device", metavar="NAME", help="the device the meter measured (default: the "
                   "run's only device)")
    p.add_argument("--start", type=_unix_seconds, metavar="UNIX_SECONDS",
                   help="the unix time (this machine's clock) of the log's first row; needed for "
                        "ppk2 and monsoon, whose times are from the log's start")
    p.add_argument("--voltage", type=_volts, metavar="V", help="the supply voltage, for a log "
                   "of current only (needed for ppk2)")
    p.add_argument("--subtract-idle", action="store_true", help="energy above the meter's mean "
                   "power over the cool-down before each case")
    p.set_defaults(func=cmd_energy_attach)


def cmd_models_build(args) -> int:
    from orchestrator.models.build import build_variants
    return build_variants(args.source, args.variants, args.representative, args.out)


def _with_inventory(p):
    p.add_argument("-i", "--inventory", action="append", metavar="PATH",
                   help="inventory file or folder, benchfleet YAML or Ansible INI/YAML "
                        "(repeatable; default: inventory/, without its examples/)")
    return p


def _with_json(p, what):
    p.add_argument("--json", action="store_true", help="print %s as JSON on stdout" % what)
    return p


def _devices_parser(sub):
    devices = sub.add_parser("devices", help="list, add, probe and trust devices")
    dsub = devices.add_subparsers(dest="devices_verb", required=True, metavar="ACTION")
    p = _with_json(_with_inventory(dsub.add_parser(
        "list", help="the devices and how each is reached")), "the devices")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every effective SSH setting and where it came from "
                        "(inventory, ssh_config or default)")
    p.set_defaults(func=cmd_devices_list)
    p = dsub.add_parser("add", help="write inventory/NAME.yaml, trust the host key, probe")
    p.add_argument("name", metavar="NAME")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="address or DNS name")
    where.add_argument("--ssh-alias", metavar="ALIAS", help="a Host entry of ~/.ssh/config")
    p.add_argument("--user")
    p.add_argument("--port", type=int)
    p.add_argument("--identity-file", metavar="KEY")
    p.add_argument("--known-hosts", metavar="FILE", help="default ~/.ssh/known_hosts")
    p.add_argument("--python", help="the device's Python (default python3)")
    p.add_argument("--workdir", help="the device's benchfleet folder (default ~/.benchfleet)")
    p.add_argument("--tags", help="comma-separated")
    p.add_argument("--accelerators", help="comma-separated: cpu, gpu-nvidia, edgetpu, jetson, npu")
    p.add_argument("--inventory-dir", default=DEFAULT_INVENTORY[0], metavar="DIR",
                   help="where NAME.yaml goes (default inventory/)")
    p.add_argument("--yes", action="store_true", help="trust the host key without asking")
    p.add_argument("--no-probe", action="store_true", help="do not probe after adding")
    p.set_defaults(func=cmd_devices_add)
    p = _with_json(_with_inventory(dsub.add_parser(
        "probe", help="run the agent's probe: what each device can run (cached for plan)")),
        "each probe document")
    p.add_argument("name", nargs="?", help="one device (default: all)")
    p.set_defaults(func=cmd_devices_probe)
    p = _with_json(_with_inventory(dsub.add_parser(
        "status", help="whether each device is free or busy with a run, and whose")),
        "each device's state")
    p.add_argument("name", nargs="?", help="one device (default: all)")
    p.set_defaults(func=cmd_devices_status)
    p = _with_inventory(dsub.add_parser("trust", help="fetch a device's SSH host key and trust it"))
    p.add_argument("name")
    p.add_argument("--replace", action="store_true", help="replace the key(s) known_hosts holds "
                   "for this device (after a reinstall); without it a different key is refused")
    p.set_defaults(func=cmd_devices_trust)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchfleet", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="benchfleet %s" % __version__)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _devices_parser(sub)

    p = _with_inventory(sub.add_parser("validate", help="check inventory and suite files"))
    p.add_argument("suites", nargs="*", metavar="SUITE")
    p.set_defaults(func=cmd_validate)

    p = _with_json(_with_inventory(sub.add_parser(
        "plan", help="what would run on each device, and why the rest is skipped")), "the plan")
    p.add_argument("suite", metavar="SUITE")
    p.add_argument("--devices", help="comma-separated names or tag:X (overrides the suite)")
    p.set_defaults(func=cmd_plan)

    p = _with_json(_with_inventory(sub.add_parser(
        "run", help="run a suite and print the comparison table")), "the summary and every row")
    p.add_argument("suite", metavar="SUITE", nargs="?")
    p.add_argument("--devices", help="comma-separated names or tag:X (overrides the suite)")
    p.add_argument("--results-dir", default="results", help="where <run-id>/ goes (default results/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted or killed run in its "
                   "folder (same as `benchfleet resume RUN_DIR`)")
    _run_options(p)
    p.set_defaults(func=cmd_run)

    p = _with_json(sub.add_parser(
        "resume", help="finish an interrupted or killed run: attach to agents still running it, "
                       "collect what they measured, run only the cases without a result"),
        "the summary and every row")
    p.add_argument("resume", metavar="RUN_DIR")
    _run_options(p)
    p.set_defaults(func=cmd_run, suite=None, devices=None, inventory=None, results_dir=None)

    from orchestrator import schedule
    schedule.add_schedule_parser(sub)

    p = _with_json(sub.add_parser("runs", help="the runs in a results folder, their state and how "
                                  "to finish the ones that did not"), "every run")
    p.add_argument("--results-dir", default="results", help="default results/")
    p.set_defaults(func=cmd_runs)

    _energy_parser(sub)

    p = _with_json(sub.add_parser(
        "compare", help="compare two runs (or a run with the baseline of its last runs): faster, "
                        "slower, same or not comparable per device x case; exit 3 on a slowdown"),
        "the comparison")
    p.add_argument("a", metavar="A", help="baseline (the last N runs of B's suite and devices), "
                   "a run id or a run folder")
    p.add_argument("b", metavar="B", nargs="?", help="a run id or folder (default: the newest run)")
    p.add_argument("--results-dir", default="results", help="where run folders are (default "
                   "results/)")
    _history_option(p)
    _compare_options(p)
    p.add_argument("--on-regression", metavar="CMD", help="a shell command run when a case got "
                   "slower, the comparison as JSON on its stdin")
    p.set_defaults(func=cmd_compare)

    p = _with_json(sub.add_parser(
        "history", help="p50 over time per device x case, changes marked; `history import "
                        "[PATH...]` stores existing run folders"), "the trends or the import")
    p.add_argument("action", nargs="?", metavar="import", help="import: store run folders "
                   "(default: every run under --results-dir); importing twice adds nothing")
    p.add_argument("paths", nargs="*", metavar="PATH", help=argparse.SUPPRESS)
    p.add_argument("--device", help="only this device")
    p.add_argument("--case", help="only this case (a case id, or part of its label)")
    p.add_argument("--suite", help="only this suite (its name)")
    p.add_argument("--runs", type=_positive_int, default=30, help="the newest N runs (default 30)")
    p.add_argument("--results-dir", default="results", help="default results/")
    _history_option(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("report", help="write results.csv and comparison.md of a run again from "
                       "its raw results; --html: also report.html (plots, trends)")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--html", action="store_true", help="also write report.html")
    p.add_argument("--results-dir", default="results", help=argparse.SUPPRESS)
    _history_option(p)
    p.set_defaults(func=cmd_report)

    models = sub.add_parser("models", help="build model variants ahead of a run")
    msub = models.add_subparsers(dest="models_verb", required=True, metavar="ACTION")
    p = msub.add_parser("build", help="TFLite fp32/fp16/int8, ONNX, Edge TPU from a built-in "
                        "model or a SavedModel folder (content-hashed, cached)")
    p.add_argument("source", metavar="NAME|PATH", help="a built-in model or a SavedModel folder")
    p.add_argument("--variants", help="comma-separated (default tflite-fp32,tflite-fp16,"
                   "tflite-int8,onnx; also savedmodel, int8-edgetpu)")
    p.add_argument("--representative", metavar="DIR", help="int8 calibration samples: .npy "
                   "files (or images with Pillow) shaped like the model input")
    p.add_argument("--out", metavar="DIR", help="also copy each variant here")
    p.set_defaults(func=cmd_models_build)
    return parser


SSH_LOG_BYTES = 4 * 1024 * 1024   # per file of the SSH debug log; two older ones are kept


def _shown(text) -> str:
    """Text for the console that may hold a device's words (a probe's reasons, an error's remote
    output): each line made inert for the terminal (escape.terminal), the line breaks kept."""
    from orchestrator import escape
    return "\n".join(escape.terminal(line, limit=None) for line in str(text).split("\n"))


def _quiet_libraries() -> None:
    """paramiko logs every failed handshake with a traceback from its own thread; the transport
    maps each failure to one clear line per device, so on the console that is only noise. Its
    whole account (DEBUG) goes to the SSH debug log, CACHE/logs/ssh.log, for whoever wants the
    details; never to the console, even when the log cannot be written."""
    import logging
    import logging.handlers
    logger = logging.getLogger("paramiko")
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    try:
        folder = cache_root() / "logs"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.handlers.RotatingFileHandler(
            folder / "ssh.log", maxBytes=SSH_LOG_BYTES, backupCount=2, encoding="utf-8",
            delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(threadName)s "
                                               "%(name)s %(levelname)s %(message)s"))
        handler.handleError = lambda record: None   # a full disk must not print a traceback
    except OSError:
        handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(_shown(line), file=sys.stderr)
        print("benchfleet: %d problem%s; nothing was run" % (
            len(exc.problems), "" if len(exc.problems) == 1 else "s"), file=sys.stderr)
        return EXIT_CONFIG
    except OrchestratorError as exc:
        print(_shown("benchfleet: %s" % exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("benchfleet: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Device threads may still be blocked in a poll; exiting normally would join them.
        os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
