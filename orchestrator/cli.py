"""The `benchfleet` command line: the only place that prints errors and picks the exit code.

Exit codes: 0 every case ok or skipped, 1 some case failed, 2 bad input or usage, 130 interrupted.
Heavy imports (tensorflow, fabric, paramiko) happen inside the verbs, so --help starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from orchestrator.errors import ConfigError, OrchestratorError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_INVENTORY = ["inventory"]


def _inventory(args):
    from orchestrator.config.inventory import load_inventory
    return load_inventory(args.inventory or DEFAULT_INVENTORY)


def _device_list(text):
    return [d.strip() for d in text.split(",") if d.strip()] if text else None


def cmd_devices_list(args) -> int:
    inv = _inventory(args)
    print("%-16s %-9s %-26s %-24s %s" % ("NAME", "TRANSPORT", "TARGET", "TAGS", "ACCELERATORS"))
    for dev in inv:
        if dev.transport == "local":
            target = "(this machine)"
        else:
            target = "%s%s:%d" % (dev.user + "@" if dev.user else "", dev.host or dev.ssh_alias, dev.port)
        print("%-16s %-9s %-26s %-24s %s" % (dev.name, dev.transport, target, ",".join(dev.tags),
                                             ",".join(dev.accelerators) or "-"))
    return EXIT_OK


def cmd_devices_trust(args) -> int:
    from orchestrator.transport.hostkeys import trust_host_key
    inv = _inventory(args)
    for dev in inv.select([args.name]):
        fingerprint = trust_host_key(dev, dev.known_hosts_path)
        print("%s: trusted %s (added to %s)" % (dev.name, fingerprint, dev.known_hosts_path))
    return EXIT_OK


def cmd_devices_probe(args) -> int:
    from orchestrator.probes import probe_devices
    inv = _inventory(args)
    devices = inv.select([args.name]) if args.name else list(inv)
    outcomes = probe_devices(devices)
    failed = False
    for name, (probe, error) in outcomes.items():
        if error:
            failed = True
            print("%s: probe failed: %s" % (name, error), file=sys.stderr)
        else:
            print(json.dumps({name: probe}, indent=2, sort_keys=True))
    return EXIT_FAILED if failed else EXIT_OK


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
    print("ok: %d devices, %d suites" % (len(list(inv)), len(args.suites)))
    return EXIT_OK


def cmd_plan(args) -> int:
    from orchestrator.plan import plan
    from orchestrator.config.suite import load_suite
    from orchestrator.probes import cached_probes
    suite = load_suite(args.suite)
    inv = _inventory(args)
    the_plan = plan(suite, inv, devices=_device_list(args.devices), probes=cached_probes(inv))
    print(the_plan.to_text())
    return EXIT_OK


def cmd_run(args) -> int:
    from orchestrator.run import run_suite
    summary = run_suite(args.suite, args.inventory or DEFAULT_INVENTORY,
                        devices=_device_list(args.devices), results_dir=args.results_dir,
                        max_parallel=args.parallel)
    return EXIT_FAILED if summary.failed else EXIT_OK


def cmd_models_build(args) -> int:
    from orchestrator.models.build import build_variants
    return build_variants(args.source, args.variants, args.representative, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchfleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def with_inventory(p):
        p.add_argument("-i", "--inventory", action="append", metavar="PATH",
                       help="inventory file or folder (repeatable; default: inventory/)")
        return p

    devices = sub.add_parser("devices", help="list, probe and trust devices")
    dsub = devices.add_subparsers(dest="devices_verb", required=True, metavar="ACTION")
    with_inventory(dsub.add_parser("list", help="list the inventory")).set_defaults(
        func=cmd_devices_list)
    p = with_inventory(dsub.add_parser("probe", help="run the agent's probe (cached per device)"))
    p.add_argument("name", nargs="?", help="one device (default: all)")
    p.set_defaults(func=cmd_devices_probe)
    p = with_inventory(dsub.add_parser("trust", help="fetch a device's SSH host key and trust it"))
    p.add_argument("name")
    p.set_defaults(func=cmd_devices_trust)

    p = with_inventory(sub.add_parser("validate", help="check inventory and suite files"))
    p.add_argument("suites", nargs="*", metavar="SUITE")
    p.set_defaults(func=cmd_validate)

    p = with_inventory(sub.add_parser("plan", help="show the cases per device, and the skips"))
    p.add_argument("suite")
    p.add_argument("--devices", help="comma-separated names or tag:X (overrides the suite)")
    p.set_defaults(func=cmd_plan)

    p = with_inventory(sub.add_parser("run", help="run a suite and print the comparison table"))
    p.add_argument("suite")
    p.add_argument("--devices", help="comma-separated names or tag:X (overrides the suite)")
    p.add_argument("--results-dir", default="results", help="where <run-id>/ goes (default results/)")
    p.add_argument("--parallel", type=int, default=8, help="devices at once (default 8)")
    p.set_defaults(func=cmd_run)

    models = sub.add_parser("models", help="build model variants")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print("benchfleet: %d problem%s; nothing was run" % (
            len(exc.problems), "" if len(exc.problems) == 1 else "s"), file=sys.stderr)
        return EXIT_CONFIG
    except OrchestratorError as exc:
        print("benchfleet: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("benchfleet: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Device threads may still be blocked in a poll; exiting normally would join them.
        os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
