"""Scheduled sweeps: `benchfleet schedule install | list | remove` (docs/NIGHTLY.md).

A schedule runs a plain `benchfleet run SUITE -i INV ... --results-dir DIR` once a day at HH:MM
(this machine's local time), as one of:

    systemd   a user service + timer, ~/.config/systemd/user/benchfleet-NAME.{service,timer}
              (under $XDG_CONFIG_HOME when set); output goes to the journal
    cron      one line of the user's crontab, tagged `# benchfleet:NAME`; output is appended to
              CACHE/logs/schedule-NAME.log (CACHE: $BENCHFLEET_CACHE, else ~/.cache/benchfleet)

systemd is the default where `systemctl --user` answers, cron elsewhere; --systemd or --cron
forces one. Every path of the command is absolute (made so from the folder install runs in), so
the schedule does not depend on where it is started from.

The scheduled run's exit code says what happened: 0 every case ok or skipped, 1 a case failed,
2 bad input (a suite or inventory edited into an error since), 75 the previous run of this suite
into this results folder is still going (the sweep lock: the two never overlap).

Everything a user gives is checked before anything is written; a problem is a ConfigError (exit
2) naming the field and the fix. Unit files and a --crontab-file are written atomically (a temp
file, then os.replace), so a crash never leaves half a unit behind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.cache import cache_root
from orchestrator.errors import ConfigError, OrchestratorError

EXIT_OK, EXIT_FAILED = 0, 1
EXIT_SWEEP_BUSY = 75        # what a scheduled run returns while the previous one still runs
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
UNIT_PREFIX = "benchfleet-"
CRON_TAG = "benchfleet:"
KINDS = ("systemd", "cron")
COMMAND_TIMEOUT_S = 30      # a systemctl or crontab call that takes longer is broken
CRON_INSTALL_HINT = "install cron (Debian/Ubuntu: sudo apt-get install cron)"
SYSTEMD_EXEC_REFUSED = "\"'\\"   # ExecStart='s executable may not hold these (control chars aside)
_TAGGED = re.compile(r"#\s*" + re.escape(CRON_TAG) + r"([a-z0-9][a-z0-9._-]*)\s*$")
_AT = re.compile(r"^(\d{1,2}):(\d{2})$")
_ON_CALENDAR = re.compile(r"^\*-\*-\* (\d{2}):(\d{2})(?::00)?$")


@dataclass
class Request:
    """One `schedule install`, checked: every path absolute."""

    name: str
    kind: str
    hour: int
    minute: int
    suite: str
    inventories: list
    results_dir: str
    workdir: str
    python: str
    env: dict = field(default_factory=dict)   # carried into the scheduled run (BENCHFLEET_CACHE)
    run_options: list = field(default_factory=list)   # --history, --compare-to, --on-regression

    @property
    def at(self) -> str:
        return "%02d:%02d" % (self.hour, self.minute)

    def argv(self) -> list:
        """The scheduled command: a plain `benchfleet run`."""
        argv = [self.python, "-m", "orchestrator", "run", self.suite]
        for inv in self.inventories:
            argv += ["-i", inv]
        return argv + ["--results-dir", self.results_dir] + list(self.run_options)


@dataclass
class Schedule:
    """One installed schedule, as `list` shows it."""

    name: str
    kind: str
    at: str
    suite: str
    where: str          # the timer file, or "crontab" / the --crontab-file
    log: str            # where its output goes


# ---------------------------------------------------------------------------- paths and names

def unit_dir() -> Path:
    """The systemd user unit folder: $XDG_CONFIG_HOME/systemd/user, else ~/.config/systemd/user
    (a relative XDG_CONFIG_HOME is ignored, as the XDG spec says)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "systemd" / "user"


def unit_names(name) -> tuple:
    """(service, timer) file names of schedule NAME."""
    return UNIT_PREFIX + name + ".service", UNIT_PREFIX + name + ".timer"


def log_path(name) -> Path:
    """Where a cron schedule's output goes: CACHE/logs/schedule-NAME.log."""
    return cache_root() / "logs" / ("schedule-%s.log" % name)


def journal_command(name) -> str:
    return "journalctl --user -u %s" % unit_names(name)[0]


# ---------------------------------------------------------------------------- checking input

def check_name(name, problems) -> None:
    if not re.match(NAME_PATTERN, name or ""):
        problems.append("schedule NAME %r: use lowercase letters, digits, '.', '_' and '-', "
                        "starting with a letter or digit (e.g. nightly)" % name)


def parse_at(text, problems):
    """(hour, minute) of --at HH:MM, or None with a problem appended."""
    match = _AT.match(text or "")
    if match and int(match.group(1)) < 24 and int(match.group(2)) < 60:
        return int(match.group(1)), int(match.group(2))
    problems.append("--at %r: expected a time of day HH:MM from 00:00 to 23:59 (e.g. --at 02:30)"
                    % text)
    return None


def check_word(what, value, problems) -> None:
    """A path going into a unit file or a crontab line: no control characters (a newline would
    end the line), and text that can be written as UTF-8."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        problems.append("%s %r: holds a control character (newline, tab...), which a unit file "
                        "or crontab line cannot carry; rename it" % (what, value))
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.append("%s %r: is not valid UTF-8; rename it" % (what, value))


def check_python(python, kind, problems) -> None:
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        problems.append("--python %s: not an executable file; give the absolute path of the "
                        "Python that has benchfleet installed" % python)
    elif kind == "systemd" and any(c in SYSTEMD_EXEC_REFUSED for c in python):
        problems.append("--python %s: systemd refuses an executable path holding a quote or a "
                        "backslash; give one without (a symlink to it), or use --cron" % python)


def check_suite(suite, problems) -> None:
    from orchestrator.config.suite import load_suite
    try:
        load_suite(suite)
    except ConfigError as exc:
        problems.extend(exc.problems)
        problems.append("--suite %s: a suite must load before it is scheduled; fix the problems "
                        "above (check with `benchfleet validate %s`)" % (suite, shlex.quote(suite)))


def check_inventories(paths, problems) -> None:
    from orchestrator.config.inventory import load_inventory
    try:
        load_inventory(paths)
    except ConfigError as exc:
        problems.extend(exc.problems)
        problems.append("-i: every inventory must load before it is scheduled; fix the problems "
                        "above (check with `benchfleet validate -i PATH`)")


def build_request(args, kind) -> Request:
    """The checked Request of `schedule install` args for a schedule of `kind` (paths made
    absolute from the current folder), or ConfigError with every problem at once."""
    from orchestrator.config.inventory import DEFAULT_INVENTORY
    problems = []
    check_name(args.name, problems)
    at = parse_at(args.at, problems)
    workdir = os.getcwd()
    suite = os.path.abspath(args.suite)
    inventories = [os.path.abspath(p) for p in (args.inventory or DEFAULT_INVENTORY)]
    results_dir = os.path.abspath(args.results_dir)
    python = os.path.abspath(args.python or sys.executable)
    env = {"BENCHFLEET_CACHE": os.path.abspath(os.environ["BENCHFLEET_CACHE"])} \
        if os.environ.get("BENCHFLEET_CACHE") else {}
    run_options = []
    for flag, value in (("--history", getattr(args, "history", None)),
                        ("--compare-to", getattr(args, "compare_to", None)),
                        ("--on-regression", getattr(args, "on_regression", None))):
        if value:
            if flag == "--compare-to" and value != "baseline" and os.path.exists(value):
                value = os.path.abspath(value)
            run_options += [flag, value]
    if getattr(args, "on_regression", None) and not getattr(args, "compare_to", None):
        problems.append("--on-regression needs --compare-to (baseline, for a nightly)")
    for what, value in ([("--suite", suite), ("--results-dir", results_dir),
                         ("--python", python), ("the current folder", workdir)]
                        + [("-i", p) for p in inventories]
                        + [("BENCHFLEET_CACHE", v) for v in env.values()]
                        + list(zip(run_options[::2], run_options[1::2]))):
        check_word(what, value, problems)
    check_python(python, kind, problems)
    check_suite(suite, problems)
    check_inventories(inventories, problems)
    if problems:
        raise ConfigError(problems)
    return Request(args.name, kind, at[0], at[1], suite, inventories, results_dir, workdir,
                   python, env, run_options)


# ---------------------------------------------------------------------------- systemd quoting

def systemd_quote(word, dollar=True) -> str:
    """`word` as one double-quoted systemd word: `\\` and `"` backslash-escaped, `%` (specifier)
    written `%%`, and with dollar (ExecStart= expands $VAR) `$` written `$$`."""
    out = []
    for ch in word:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and dollar:
            out.append("$$")
        else:
            out.append(ch)
    return '"%s"' % "".join(out)


def systemd_path(path) -> str:
    """A path for a setting that takes one unquoted path (WorkingDirectory=): only `%` needs
    escaping there."""
    return path.replace("%", "%%")


_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
              "s": " ", "\\": "\\", '"': '"', "'": "'"}


def systemd_split(line) -> list:
    """The words of an ExecStart= value as systemd reads them back (quotes, C escapes, `%%` and
    `$$`): used by `list` to show a schedule's suite. Specifiers other than %% and variables are
    left as written."""
    words, word, quote, i, in_word = [], [], None, 0, False
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            if nxt == "x" and i + 3 < len(line):
                word.append(chr(int(line[i + 2:i + 4], 16)))
                i += 4
            else:
                word.append(_C_ESCAPES.get(nxt, nxt))
                i += 2
            in_word = True
            continue
        if ch in "%$" and line[i + 1:i + 2] == ch:
            word.append(ch)
            i += 2
            in_word = True
            continue
        if quote:
            if ch == quote:
                quote = None
            else:
                word.append(ch)
        elif ch in "\"'":
            quote, in_word = ch, True
        elif ch in " \t":
            if in_word:
                words.append("".join(word))
            word, in_word = [], False
        else:
            word.append(ch)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    return words


# ---------------------------------------------------------------------------- systemd units

def service_text(req: Request) -> str:
    """The oneshot service that runs the sweep (stdout and stderr go to the journal)."""
    env = "".join("Environment=%s\n" % systemd_quote("%s=%s" % kv, dollar=False)
                  for kv in sorted(req.env.items()))
    return (
        "# Written by `benchfleet schedule install %s`; remove it with "
        "`benchfleet schedule remove %s`.\n"
        "# Exit codes: 0 ok, 1 a case failed, 2 bad input, 75 the previous run still going.\n"
        "[Unit]\n"
        "Description=benchfleet schedule %s: benchfleet run %s\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "WorkingDirectory=%s\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "%s"
        "ExecStart=%s\n"
        % (req.name, req.name, req.name, systemd_path(os.path.basename(req.suite)),
           systemd_path(req.workdir), env, exec_start(req.argv())))


def exec_start(argv) -> str:
    """The ExecStart= value of argv. The executable is a path systemd runs as written (no $VAR
    expansion there, so a `$` stays one); the arguments get `$` written `$$`."""
    return " ".join([systemd_quote(argv[0], dollar=False)] + [systemd_quote(w) for w in argv[1:]])


def timer_text(req: Request) -> str:
    """The timer: every day at HH:MM; Persistent= runs a night missed while the machine was off
    as soon as it is back."""
    service = unit_names(req.name)[0]
    return (
        "# Written by `benchfleet schedule install %s`.\n"
        "[Unit]\n"
        "Description=benchfleet schedule %s, every day at %s\n"
        "\n"
        "[Timer]\n"
        "OnCalendar=*-*-* %s:00\n"
        "Persistent=true\n"
        "Unit=%s\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n" % (req.name, req.name, req.at, req.at, service))


def write_atomic(path: Path, text: str, mode=0o644) -> None:
    """Write `text` to `path` through a temp file in the same folder and os.replace: a reader
    (or systemd) sees the old file or the new one, never a part."""
    from agent.fsutil import atomic_write_text
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(path), text)
    os.chmod(path, mode)


def write_units(req: Request, folder: Path) -> list:
    """Write the service, then the timer that names it; a failure removes a service this call
    created. Returns both paths."""
    service, timer = (folder / n for n in unit_names(req.name))
    service_existed = service.exists()
    try:
        write_atomic(service, service_text(req))
        write_atomic(timer, timer_text(req))
    except OSError as exc:
        if not service_existed:
            _unlink(service)
        raise OrchestratorError("cannot write %s: %s; nothing was scheduled (check the folder's "
                                "permissions and free space)" % (folder, exc.strerror or exc))
    return [service, timer]


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def systemctl(*args):
    """Run `systemctl --user ARGS`: (ok, what it said)."""
    exe = shutil.which("systemctl")
    if not exe:
        return False, "no systemctl command on this machine"
    try:
        proc = subprocess.run([exe, "--user"] + list(args), capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return proc.returncode == 0, said[-1] if said else "exit %d" % proc.returncode


def systemd_usable() -> bool:
    """Whether `systemctl --user` reaches a user manager (not so in most containers)."""
    return systemctl("show-environment")[0]


def systemctl_commands(req_name, replaced) -> list:
    timer = unit_names(req_name)[1]
    commands = [["daemon-reload"], ["enable", "--now", timer]]
    return commands + [["restart", timer]] if replaced else commands


def enable_units(name, replaced):
    """daemon-reload and enable --now the timer (restart it when replacing, so a new time counts
    at once): None when done, else why not."""
    for command in systemctl_commands(name, replaced):
        ok, said = systemctl(*command)
        if not ok:
            return "systemctl --user %s: %s" % (" ".join(command), said)
    return None


def linger_hint() -> str | None:
    """A user's timers run only while they are logged in, unless lingering is on."""
    try:
        import pwd
        user = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return None
    if os.path.exists("/var/lib/systemd/linger/%s" % user):
        return None
    return ("note: systemd runs %s's timers only while %s is logged in; to run them at night "
            "without a login: sudo loginctl enable-linger %s" % (user, user, user))


def install_systemd(req: Request, replaced) -> int:
    folder = unit_dir()
    paths = write_units(req, folder)
    print("installed %s (systemd, every day at %s): %s" % (req.name, req.at, req.suite))
    for path in paths:
        print("  wrote %s" % path)
    print("  output: %s" % journal_command(req.name))
    problem = enable_units(req.name, replaced)
    if problem:
        print("%s\nThe units are written but not enabled (no user systemd here, as in a "
              "container). Where systemd runs for this user, run:" % problem, file=sys.stderr)
        for command in systemctl_commands(req.name, replaced):
            print("  systemctl --user %s" % " ".join(command), file=sys.stderr)
        print("or install it with cron instead: add --cron --replace", file=sys.stderr)
        return EXIT_FAILED
    print("  enabled: systemctl --user list-timers %s" % unit_names(req.name)[1])
    hint = linger_hint()
    if hint:
        print(hint, file=sys.stderr)
    return EXIT_OK


def systemd_schedules() -> list:
    """Every benchfleet-*.timer of the user unit folder, with its time and suite."""
    folder = unit_dir()
    if not folder.is_dir():
        return []
    found = []
    for timer in sorted(folder.glob(UNIT_PREFIX + "*.timer")):
        name = timer.name[len(UNIT_PREFIX):-len(".timer")]
        found.append(Schedule(name, "systemd", _timer_time(timer),
                              _service_suite(folder / unit_names(name)[0]), str(timer),
                              journal_command(name)))
    return found


def _setting(path: Path, key):
    """The last `KEY=` value of a unit file, or None."""
    value = None
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(key + "="):
                value = line[len(key) + 1:].strip()
    except OSError:
        return None
    return value


def _timer_time(timer: Path) -> str:
    value = _setting(timer, "OnCalendar") or "?"
    match = _ON_CALENDAR.match(value)
    return "%s:%s" % match.groups() if match else value


def _suite_of(argv) -> str:
    """The SUITE of a `... -m orchestrator run SUITE ...` argv, or '?'."""
    for i, word in enumerate(argv[:-1]):
        if word == "run" and argv[max(0, i - 1)] == "orchestrator":
            return argv[i + 1]
    return "?"


def _service_suite(service: Path) -> str:
    exec_start = _setting(service, "ExecStart")
    return _suite_of(systemd_split(exec_start)) if exec_start else "?"


def remove_systemd(name) -> list:
    """Disable the timer, delete both units (and the enable link), daemon-reload. Returns notes
    for stderr (what could not be done)."""
    folder = unit_dir()
    service, timer = unit_names(name)
    notes = []
    usable = systemd_usable()
    if usable:
        ok, said = systemctl("disable", "--now", timer)
        if not ok:
            notes.append("systemctl --user disable --now %s: %s" % (timer, said))
    for path in (folder / timer, folder / service, folder / "timers.target.wants" / timer):
        _unlink(path)
    if usable:
        ok, said = systemctl("daemon-reload")
        if not ok:
            notes.append("systemctl --user daemon-reload: %s" % said)
    else:
        notes.append("systemctl --user is not reachable here; the units are deleted. Where "
                     "systemd runs for this user, run: systemctl --user daemon-reload")
    return notes


# ---------------------------------------------------------------------------- cron

def cron_quote(word) -> str:
    """`word` for a crontab command: shell-quoted (shlex.quote), with every `%` (which cron
    turns into a newline) written `\\%` outside the quotes, where sh sees a plain `%`."""
    return "\\%".join(shlex.quote(piece) if piece else "''" for piece in word.split("%")) \
        if "%" in word else shlex.quote(word)


def cron_line(req: Request) -> str:
    """`MM HH * * * cd DIR && [VAR=...] PYTHON -m orchestrator run ... >> LOG 2>&1 # tag`."""
    env = "".join("%s=%s " % (k, cron_quote(v)) for k, v in sorted(req.env.items()))
    return "%d %d * * * cd %s && %s%s >> %s 2>&1 # %s%s" % (
        req.minute, req.hour, cron_quote(req.workdir), env,
        " ".join(cron_quote(w) for w in req.argv()), cron_quote(str(log_path(req.name))),
        CRON_TAG, req.name)


class NoCrontab(OrchestratorError):
    """No `crontab` command on this machine (and no --crontab-file)."""


def read_crontab(crontab_file=None) -> str:
    """The user's crontab (`crontab -l`; none yet is an empty one), or the --crontab-file."""
    if crontab_file:
        try:
            return Path(crontab_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            raise OrchestratorError("cannot read %s: %s" % (crontab_file, exc))
    exe = shutil.which("crontab")
    if not exe:
        raise NoCrontab("no crontab command on this machine: %s" % CRON_INSTALL_HINT)
    proc = _crontab(exe, ["-l"])
    if proc.returncode == 0:
        return proc.stdout
    if "no crontab" in proc.stderr.lower():
        return ""
    raise OrchestratorError("crontab -l failed: %s" % (proc.stderr.strip() or proc.returncode))


def write_crontab(text, crontab_file=None) -> None:
    """Install `text` as the user's crontab (`crontab -`, or `crontab -r` when nothing is left),
    or write the --crontab-file atomically."""
    if crontab_file:
        try:
            write_atomic(Path(crontab_file), text, mode=0o600)
        except OSError as exc:
            raise OrchestratorError("cannot write %s: %s" % (crontab_file,
                                                             exc.strerror or exc))
        return
    exe = shutil.which("crontab")
    if not exe:
        raise NoCrontab("no crontab command on this machine: %s" % CRON_INSTALL_HINT)
    proc = _crontab(exe, ["-r"] if not text.strip() else ["-"], text)
    if proc.returncode != 0 and not (not text.strip() and "no crontab" in proc.stderr.lower()):
        raise OrchestratorError("crontab %s failed: %s" % ("-r" if not text.strip() else "-",
                                                          proc.stderr.strip() or proc.returncode))


def _crontab(exe, args, text=None):
    try:
        return subprocess.run([exe] + args, input=text, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S,
                              stdin=None if text is not None else subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OrchestratorError("crontab %s failed: %s" % (" ".join(args), exc))


def tagged_name(line):
    """The schedule NAME a crontab line is tagged with, or None."""
    match = _TAGGED.search(line)
    return match.group(1) if match else None


def replace_line(text, name, new_line) -> str:
    """The crontab text with the line tagged NAME replaced by new_line (appended when there is
    none; None removes it). Every other line is kept as it was."""
    lines, placed = [], False
    for line in text.splitlines():
        if tagged_name(line) == name:
            if new_line is not None and not placed:
                lines.append(new_line)
            placed = True
        else:
            lines.append(line)
    if new_line is not None and not placed:
        lines.append(new_line)
    return "".join(line + "\n" for line in lines)   # cron needs the last line ended too


def cron_schedules(crontab_file=None) -> list:
    """Every tagged line of the crontab, with its time and suite."""
    where = str(crontab_file) if crontab_file else "crontab"
    found = []
    for line in read_crontab(crontab_file).splitlines():
        name = tagged_name(line)
        if name and not line.lstrip().startswith("#"):
            at, suite = _cron_fields(line)
            found.append(Schedule(name, "cron", at, suite, where, str(log_path(name))))
    return found


def _cron_fields(line):
    """(HH:MM or the raw time fields, suite) of one tagged crontab line."""
    fields = line.split(None, 5)
    if len(fields) < 6:
        return "?", "?"
    minute, hour = fields[0], fields[1]
    at = "%02d:%02d" % (int(hour), int(minute)) if minute.isdigit() and hour.isdigit() \
        and fields[2:5] == ["*", "*", "*"] else " ".join(fields[:5])
    command = _TAGGED.sub("", fields[5]).replace("\\%", "%")
    try:
        return at, _suite_of(shlex.split(command))
    except ValueError:
        return at, "?"


def install_cron(req: Request, crontab_file) -> int:
    line = cron_line(req)
    try:
        text = read_crontab(crontab_file)
    except NoCrontab as exc:
        print(line)
        print("%s.\nThen add the line above to your crontab (`crontab -e`), or install this "
              "schedule with systemd instead (--systemd)." % exc, file=sys.stderr)
        return EXIT_FAILED
    log = log_path(req.name)
    try:
        log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise OrchestratorError("cannot create the log folder %s: %s" % (log.parent,
                                                                        exc.strerror or exc))
    write_crontab(replace_line(text, req.name, line), crontab_file)
    print("installed %s (cron, every day at %s): %s" % (req.name, req.at, req.suite))
    print("  in %s: %s" % (crontab_file or "your crontab (crontab -l)", line))
    print("  output: %s" % log)
    return EXIT_OK


def remove_cron(name, crontab_file) -> None:
    text = read_crontab(crontab_file)
    write_crontab(replace_line(text, name, None), crontab_file)


# ---------------------------------------------------------------------------- the verbs

def all_schedules(crontab_file=None, notes=None) -> list:
    """systemd and cron schedules (cron skipped, with a note, where there is no crontab)."""
    found = systemd_schedules()
    try:
        found += cron_schedules(crontab_file)
    except NoCrontab as exc:
        if notes is not None:
            notes.append("%s; cron schedules are not listed" % exc)
    return found


def _describe(schedules) -> str:
    return ", ".join("%s (%s)" % (s.name, s.kind) for s in schedules) or "none"


def cmd_install(args) -> int:
    """`schedule install`: check everything, then write the schedule of the chosen kind."""
    kind = args.kind or ("cron" if args.crontab_file or not systemd_usable() else "systemd")
    req = build_request(args, kind)
    existing = [s for s in all_schedules(args.crontab_file) if s.name == req.name]
    if existing and not args.replace:
        raise ConfigError("schedule %s: already installed (%s, %s, at %s); add --replace to "
                          "replace it, or `benchfleet schedule remove %s` first"
                          % (req.name, existing[0].kind, existing[0].where, existing[0].at,
                             req.name))
    if req.kind == "systemd":
        rc = install_systemd(req, replaced=any(s.kind == "systemd" for s in existing))
    else:
        rc = install_cron(req, args.crontab_file)
    if rc == EXIT_OK:
        for other in {s.kind for s in existing} - {req.kind}:
            _remove_kind(req.name, other, args.crontab_file)
            print("  removed the %s schedule of the same name" % other)
    return rc


def cmd_list(args) -> int:
    """`schedule list`: one line per schedule (name, kind, time, suite), or --json."""
    notes = []
    found = all_schedules(args.crontab_file, notes)
    for note in notes:
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(s) for s in found], indent=2, sort_keys=True))
        return EXIT_OK
    if not found:
        print("no schedules (add one: benchfleet schedule install NAME --suite SUITE --at HH:MM)")
        return EXIT_OK
    width = max(len(s.name) for s in found)
    for s in found:
        print("%-*s  %-7s  %s  %s" % (width, s.name, s.kind, s.at, s.suite))
    return EXIT_OK


def _remove_kind(name, kind, crontab_file) -> None:
    if kind == "systemd":
        for note in remove_systemd(name):
            print(note, file=sys.stderr)
    else:
        remove_cron(name, crontab_file)


def cmd_remove(args) -> int:
    """`schedule remove NAME`: disable and delete its units, or drop its crontab line."""
    found = all_schedules(args.crontab_file)
    mine = [s for s in found if s.name == args.name]
    if not mine:
        raise ConfigError("schedule remove %s: no schedule of that name; installed: %s (see "
                          "`benchfleet schedule list`)" % (args.name, _describe(found)))
    for s in mine:
        _remove_kind(s.name, s.kind, args.crontab_file)
        print("removed %s (%s, %s)" % (s.name, s.kind, s.where))
    return EXIT_OK


def _crontab_option(p) -> None:
    p.add_argument("--crontab-file", metavar="PATH",
                   help="read and write this file instead of the user's crontab (for tests, or "
                        "a crontab installed some other way)")


def add_schedule_parser(subparsers) -> None:
    """Add the `schedule` verb (install, list, remove) to an argparse subparsers object; each
    handler takes args and returns the exit code."""
    schedule = subparsers.add_parser(
        "schedule", help="run a suite every night (systemd user timer or cron)",
        description="Run a suite every day at a set time (docs/NIGHTLY.md). The scheduled "
                    "command is a plain `benchfleet run`: exit 0 ok, 1 a case failed, 2 bad "
                    "input, 3 a case slower than the baseline (with --compare-to), 75 the "
                    "previous run of the same results folder still going.")
    ssub = schedule.add_subparsers(dest="schedule_verb", required=True, metavar="ACTION")
    p = ssub.add_parser("install", help="run SUITE every day at --at HH:MM")
    p.add_argument("name", metavar="NAME", help="the schedule's name (e.g. nightly)")
    p.add_argument("--suite", required=True, metavar="SUITE", help="the suite file to run")
    p.add_argument("-i", "--inventory", action="append", metavar="PATH",
                   help="inventory file or folder (repeatable; default: inventory/)")
    p.add_argument("--at", required=True, metavar="HH:MM", help="local time of day, 00:00-23:59")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--systemd", dest="kind", action="store_const", const="systemd",
                      help="a systemd user timer (default where `systemctl --user` works)")
    kind.add_argument("--cron", dest="kind", action="store_const", const="cron",
                      help="a line of your crontab (default elsewhere)")
    p.add_argument("--results-dir", default="results",
                   help="where each run's <run-id>/ goes (default results/)")
    p.add_argument("--python", metavar="PATH", help="the Python that runs the schedule (default: "
                   "the one running this command)")
    p.add_argument("--replace", action="store_true",
                   help="replace an installed schedule of the same NAME")
    p.add_argument("--compare-to", metavar="baseline|RUN", help="each night, compare the run with "
                   "the baseline of the last runs (exit 3 on a slowdown; docs/HISTORY.md)")
    p.add_argument("--on-regression", metavar="CMD", help="with --compare-to: a shell command run "
                   "when a case got slower, the comparison as JSON on its stdin")
    p.add_argument("--history", metavar="URL", help="the history database of each night (default "
                   "RESULTS_DIR/history.sqlite)")
    _crontab_option(p)
    p.set_defaults(func=cmd_install)
    p = ssub.add_parser("list", help="every benchfleet schedule: name, kind, time, suite")
    p.add_argument("--json", action="store_true", help="print them as JSON on stdout")
    _crontab_option(p)
    p.set_defaults(func=cmd_list)
    p = ssub.add_parser("remove", help="disable and delete a schedule")
    p.add_argument("name", metavar="NAME")
    _crontab_option(p)
    p.set_defaults(func=cmd_remove)
