"""benchfleet schedule: systemd user units that systemd-analyze accepts and whose ExecStart gives
back the argv asked for, crontab lines that cron's rules and sh turn into a real controller
command, install / list / remove against a crontab file and the real `crontab`, and validation
that refuses bad input before writing anything.

Nothing here touches the user's real systemd units (XDG_CONFIG_HOME is a temp folder) and only
the one real-crontab test touches a crontab, with a name of its own that it removes again.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import schedule
from orchestrator.errors import ConfigError, OrchestratorError

ROOT = Path(__file__).resolve().parents[1]
SUITE = """name: tiny
models:
  - name: spin
    synthetic_ms: 0.1
matrix:
  - runtime: synthetic
"""
INVENTORY = """devices:
  here:
    transport: local
    python: python3
    accelerators: [cpu]
"""
OTHER_LINES = [
    "MAILTO=ops@example.org",
    "# a comment of the user's",
    "*/5 * * * * /usr/bin/true > /dev/null 2>&1",
    "15 4 * * 1 cd /srv/lab && ./weekly.sh # benchfleet-ish but not a tag",
    "0 1 * * * /usr/bin/echo other # benchfleet:other",
]


# ---------------------------------------------------------------------------- helpers

@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A suite and an inventory under awkward paths (space, %, $, quotes), a unit folder and a
    cache of their own; the current folder is the repository (as a user's would be)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("BENCHFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    suite_dir = tmp_path / "suite dir %n 100% $HOME"
    suite_dir.mkdir()
    (suite_dir / "tiny 'night'.yaml").write_text(SUITE)
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "here.yaml").write_text(INVENTORY)
    return argparse.Namespace(
        root=tmp_path, suite=suite_dir / "tiny 'night'.yaml", inventory=tmp_path / "inv",
        results=tmp_path / 'results "q" \\ %i $USER', crontab=tmp_path / "crontab",
        units=tmp_path / "config" / "systemd" / "user", logs=tmp_path / "cache" / "logs")


def run_cli(capsys, *argv):
    """`benchfleet schedule ARGV` in this process, as cli.main runs a verb: (rc, out, err)."""
    parser = argparse.ArgumentParser(prog="benchfleet")
    sub = parser.add_subparsers(dest="verb", required=True)
    schedule.add_schedule_parser(sub)
    args = parser.parse_args(["schedule"] + [str(a) for a in argv])
    try:
        rc = args.func(args)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        rc = exc.exit_code
    except OrchestratorError as exc:
        print("benchfleet: %s" % exc, file=sys.stderr)
        rc = exc.exit_code
    out, err = capsys.readouterr()
    return rc, out, err


def install_args(lab, *extra, name="nightly", at="02:30"):
    return ["install", name, "--suite", lab.suite, "-i", lab.inventory, "--at", at,
            "--results-dir", lab.results] + list(extra)


def systemd_analyze():
    """The systemd-analyze binary, else a skip (a failure with BENCHFLEET_REQUIRE_SYSTEMD=1)."""
    found = shutil.which("systemd-analyze")
    if not found:
        reason = "systemd-analyze is not installed (Debian: apt-get install systemd)"
        if os.environ.get("BENCHFLEET_REQUIRE_SYSTEMD"):
            pytest.fail("BENCHFLEET_REQUIRE_SYSTEMD is set: %s" % reason)
        pytest.skip(reason)
    return found


def verify_user_units(lab, *units):
    """`systemd-analyze verify --user UNIT...` against the temp unit folder: (rc, output)."""
    runtime = lab.root / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_CONFIG_HOME=str(lab.root / "config"),
               XDG_RUNTIME_DIR=str(runtime), SYSTEMD_LOG_COLOR="0")
    proc = subprocess.run([systemd_analyze(), "verify", "--user", "--man=no"]
                          + [str(u) for u in units], capture_output=True, text=True, env=env,
                          timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def setting(path, key):
    """Every value of KEY= in a unit file."""
    return [line[len(key) + 1:] for line in Path(path).read_text().splitlines()
            if line.startswith(key + "=")]


_C = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "\\": "\\", '"': '"', "'": "'"}


def systemd_words(value):
    """A command line as systemd.syntax(7) and systemd.service(5) describe: words split at
    whitespace, double or single quotes, C-style backslash escapes; then each word's `%%` is a
    `%` (any other `%` would be a specifier); and, at exec, `$$` is a `$` in the arguments (the
    executable's path is run as written). Written apart from schedule.py, from the manuals."""
    words, cur, quote, started, i = [], "", None, False, 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            cur += _C[value[i + 1]]
            i, started = i + 2, True
            continue
        if quote and ch == quote:
            quote = None
        elif quote:
            cur += ch
        elif ch in "\"'":
            quote, started = ch, True
        elif ch == " ":
            if started:
                words.append(cur)
            cur, started = "", False
        else:
            cur, started = cur + ch, True
        i += 1
    assert quote is None, "unterminated quote in %r" % value
    if started:
        words.append(cur)
    out = []
    for n, word in enumerate(words):
        assert "%" not in word.replace("%%", ""), "a bare specifier in %r" % word
        word = word.replace("%%", "%")
        if n:
            assert "$" not in word.replace("$$", ""), "an unescaped variable in %r" % word
            word = word.replace("$$", "$")
        out.append(word)
    return out


def cron_command(line):
    """What cron hands to /bin/sh -c for a crontab line, by crontab(5): the text after the five
    time fields, where an unescaped % ends the command (the rest is stdin) and \\% is a %."""
    command = line.split(None, 5)[5]
    out, escaped = [], False
    for ch in command:
        if escaped:
            out[-1:] = [ch] if ch == "%" else [out[-1], ch]
            escaped = False
            continue
        if ch == "%":
            break
        out.append(ch)
        escaped = ch == "\\"
    return "".join(out)


def cron_shell(command, env=None, timeout=120):
    """Run a command as cron would: /bin/sh -c with cron's small environment."""
    base = {"HOME": os.environ.get("HOME", "/root"), "LOGNAME": "root", "SHELL": "/bin/sh",
            "PATH": "/usr/bin:/bin"}
    return subprocess.run(["/bin/sh", "-c", command], env=dict(base, **(env or {})),
                          capture_output=True, text=True, timeout=timeout)


def fake_python(folder, record):
    """An executable standing in for the Python of a schedule: it records its argv and folder,
    then runs the real controller with `run` turned into `validate` (and --results-dir, which
    validate has not, dropped), so the scheduled line really runs benchfleet."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python"
    path.write_text(
        "#!%s\n"
        "import json, os, sys\n"
        "argv = sys.argv[1:]\n"
        "json.dump({'argv': argv, 'cwd': os.getcwd()}, open(%r, 'w'))\n"
        "i = argv.index('run')\n"
        "rest = argv[i + 1:]\n"
        "j = rest.index('--results-dir')\n"
        "rest = rest[:j] + rest[j + 2:]\n"
        "os.execv(sys.executable, [sys.executable] + argv[:i] + ['validate'] + rest)\n"
        % (sys.executable, str(record)))
    path.chmod(0o755)
    return path


def nothing_written(lab):
    return not (lab.root / "config").exists() and not lab.crontab.exists() \
        and not lab.logs.exists()


# ---------------------------------------------------------------------------- systemd

def test_systemd_units_pass_systemd_analyze_verify(lab, capsys):
    # The interpreter is reached through a path with a space, %, $ and non-ASCII: verify checks
    # that ExecStart's executable exists, so passing means systemd read that path back exactly.
    odd = lab.root / "py dir %h $HOME ü"
    odd.mkdir()
    (odd / "python").symlink_to(sys.executable)
    rc, out, err = run_cli(capsys, *install_args(lab, "--systemd", "--python", odd / "python"))
    assert rc in (0, 1), err
    service = lab.units / "benchfleet-nightly.service"
    timer = lab.units / "benchfleet-nightly.timer"
    assert str(service) in out and str(timer) in out
    rc, said = verify_user_units(lab, service, timer)
    assert rc == 0 and "benchfleet-nightly" not in said, said
    assert setting(timer, "OnCalendar") == ["*-*-* 02:30:00"]
    assert setting(timer, "Persistent") == ["true"]
    assert setting(timer, "Unit") == ["benchfleet-nightly.service"]
    assert setting(timer, "WantedBy") == ["timers.target"]
    assert setting(service, "Type") == ["oneshot"]
    assert not list(lab.units.glob(".*")), "a temp file was left behind"

    # The control: the same unit with an executable that does not exist is refused.
    broken = lab.units / "benchfleet-broken.service"
    broken.write_text(service.read_text().replace("py dir %%h", "py dir %%H"))
    rc, said = verify_user_units(lab, broken)
    assert rc != 0 and "is not executable" in said, said


def test_exec_start_gives_back_the_argv_asked_for(lab, capsys):
    rc, _, err = run_cli(capsys, *install_args(lab, "--systemd"))
    assert rc in (0, 1), err
    service = lab.units / "benchfleet-nightly.service"
    (exec_start,) = setting(service, "ExecStart")
    assert systemd_words(exec_start) == [
        os.path.abspath(sys.executable), "-m", "orchestrator", "run", str(lab.suite),
        "-i", str(lab.inventory), "--results-dir", str(lab.results)]
    (workdir,) = setting(service, "WorkingDirectory")
    assert workdir.replace("%%", "%") == str(ROOT)
    assert setting(service, "Environment")[-1] == '"BENCHFLEET_CACHE=%s"' % (lab.root / "cache")
    # what list reads back from the unit is the same suite
    rc, out, _ = run_cli(capsys, "list", "--json", "--crontab-file", lab.crontab)
    (row,) = json.loads(out)
    assert (row["name"], row["kind"], row["at"], row["suite"]) == (
        "nightly", "systemd", "02:30", str(lab.suite))


def test_a_nightly_that_compares_with_its_baseline_carries_the_options(lab, capsys):
    """--compare-to baseline and --on-regression reach the scheduled `benchfleet run` as words
    systemd gives back exactly (the hook is a shell command with spaces, quotes and a %)."""
    hook = "mail -s 'benchfleet: slower at 100%' lab@example.org"
    rc, _, err = run_cli(capsys, *install_args(lab, "--systemd", "--compare-to", "baseline",
                                               "--on-regression", hook))
    assert rc in (0, 1), err
    service = lab.units / "benchfleet-nightly.service"
    (exec_start,) = setting(service, "ExecStart")
    assert systemd_words(exec_start)[-4:] == ["--compare-to", "baseline", "--on-regression",
                                              hook]
    rc, said = verify_user_units(lab, service, lab.units / "benchfleet-nightly.timer")
    assert rc == 0, said
    rc, _, err = run_cli(capsys, *install_args(lab, "--systemd", "--on-regression", "true",
                                               name="other"))
    assert rc == 2 and "--on-regression needs --compare-to" in err


@pytest.mark.skipif(schedule.systemd_usable(), reason="this machine has a user systemd: the "
                    "path without one cannot be shown here")
def test_systemd_without_a_user_manager_keeps_the_files_and_says_what_to_run(lab, capsys):
    rc, out, err = run_cli(capsys, *install_args(lab, "--systemd"))
    assert rc == 1
    assert (lab.units / "benchfleet-nightly.timer").is_file()
    assert "not enabled" in err
    assert "  systemctl --user daemon-reload\n" in err
    assert "  systemctl --user enable --now benchfleet-nightly.timer\n" in err


def test_systemd_list_replace_and_remove(lab, capsys):
    run_cli(capsys, *install_args(lab, "--systemd"))
    rc, out, err = run_cli(capsys, *install_args(lab, "--systemd", at="03:15"))
    assert rc == 2 and "already installed" in err and "--replace" in err
    assert setting(lab.units / "benchfleet-nightly.timer", "OnCalendar") == ["*-*-* 02:30:00"]
    rc, out, err = run_cli(capsys, *install_args(lab, "--systemd", "--replace", at="03:15"))
    assert rc in (0, 1), err
    rc, out, _ = run_cli(capsys, "list", "--crontab-file", lab.crontab)
    assert out.split()[:3] == ["nightly", "systemd", "03:15"] and str(lab.suite) in out
    # an enabled timer also has a link in timers.target.wants/: remove deletes it too
    wants = lab.units / "timers.target.wants"
    wants.mkdir()
    (wants / "benchfleet-nightly.timer").symlink_to(lab.units / "benchfleet-nightly.timer")
    rc, out, err = run_cli(capsys, "remove", "nightly", "--crontab-file", lab.crontab)
    assert rc == 0 and "removed nightly (systemd" in out
    assert not list(lab.units.glob("benchfleet-*")) and not list(wants.iterdir())
    rc, out, _ = run_cli(capsys, "list", "--crontab-file", lab.crontab)
    assert out.startswith("no schedules")


def test_systemd_refuses_an_executable_path_it_cannot_run(lab, capsys):
    odd = lab.root / "it's"
    odd.mkdir()
    (odd / "python").symlink_to(sys.executable)
    rc, _, err = run_cli(capsys, *install_args(lab, "--systemd", "--python", odd / "python"))
    assert rc == 2 and "--python" in err and "--cron" in err
    assert nothing_written(lab)


# ---------------------------------------------------------------------------- cron

def test_cron_install_list_remove_keeps_other_lines(lab, capsys):
    original = "".join(line + "\n" for line in OTHER_LINES)
    lab.crontab.write_text(original)
    rc, out, err = run_cli(capsys, *install_args(lab, "--cron", "--crontab-file", lab.crontab))
    assert rc == 0, err
    lines = lab.crontab.read_text().splitlines()
    assert lines[:len(OTHER_LINES)] == OTHER_LINES
    (mine,) = lines[len(OTHER_LINES):]
    assert mine.startswith("30 2 * * * cd %s && " % shlex.quote(str(ROOT)))
    assert mine.endswith(" >> %s 2>&1 # benchfleet:nightly"
                         % shlex.quote(str(lab.logs / "schedule-nightly.log")))
    assert lab.logs.is_dir()

    rc, _, err = run_cli(capsys, *install_args(lab, "--cron", "--crontab-file", lab.crontab,
                                               at="23:59"))
    assert rc == 2 and "already installed" in err
    rc, _, err = run_cli(capsys, *install_args(lab, "--cron", "--crontab-file", lab.crontab,
                                               "--replace", at="23:59"))
    assert rc == 0, err
    lines = lab.crontab.read_text().splitlines()
    assert lines[:len(OTHER_LINES)] == OTHER_LINES and len(lines) == len(OTHER_LINES) + 1
    assert lines[-1].startswith("59 23 * * * ")

    rc, out, _ = run_cli(capsys, "list", "--json", "--crontab-file", lab.crontab)
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"other", "nightly"}
    assert (rows["nightly"]["kind"], rows["nightly"]["at"], rows["nightly"]["suite"]) == (
        "cron", "23:59", str(lab.suite))
    rc, out, _ = run_cli(capsys, "list", "--crontab-file", lab.crontab)
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["other", "cron", "01:00"], ["nightly", "cron", "23:59"]]

    rc, out, _ = run_cli(capsys, "remove", "nightly", "--crontab-file", lab.crontab)
    assert rc == 0 and lab.crontab.read_text() == original


def test_cron_line_run_by_sh_runs_the_controller(lab, capsys):
    record = lab.root / "argv.json"
    python = fake_python(lab.root / "bin dir", record)
    rc, out, err = run_cli(capsys, *install_args(lab, "--cron", "--crontab-file", lab.crontab,
                                                 "--python", python))
    assert rc == 0, err
    (line,) = lab.crontab.read_text().splitlines()
    proc = cron_shell(cron_command(line))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(record.read_text())
    assert got["argv"] == ["-m", "orchestrator", "run", str(lab.suite), "-i", str(lab.inventory),
                           "--results-dir", str(lab.results)]
    assert got["cwd"] == str(ROOT)
    log = (lab.logs / "schedule-nightly.log").read_text()
    assert "ok: 1 devices, 1 suites" in log


@pytest.mark.parametrize("word", ["a%b", "a\\%b", "%", "%%", "\\", "'%'", '"%"', "$HOME", "`id`",
                                  "a b", "", "ü", "x\\", "\\\\%\\"])
def test_cron_quote_survives_cron_and_sh(word):
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    line = "0 0 * * * " + " ".join(schedule.cron_quote(w) for w in
                                   [sys.executable, "-c", code, word, "after"])
    proc = cron_shell(cron_command(line))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [word, "after"]


def test_cron_line_for_the_nightly_suite(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCHFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(ROOT)
    crontab = tmp_path / "crontab"
    rc, out, err = run_cli(capsys, "install", "nightly", "--suite", "suites/nightly.yaml",
                           "-i", "inventory", "-i", "inventory/examples", "--at", "02:30",
                           "--crontab-file", crontab)
    assert rc == 0, err   # --crontab-file alone means cron
    (line,) = crontab.read_text().splitlines()
    command = shlex.split(cron_command(line).split(" >> ")[0])
    assert command[command.index("run") + 1:] == [
        str(ROOT / "suites" / "nightly.yaml"), "-i", str(ROOT / "inventory"),
        "-i", str(ROOT / "inventory" / "examples"), "--results-dir", str(ROOT / "results")]


def test_nightly_suite_validates():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "validate", "suites/nightly.yaml",
                           "-i", "inventory", "-i", "inventory/examples"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from orchestrator.config.suite import load_suite
    suite = load_suite(ROOT / "suites" / "nightly.yaml")
    assert suite.cooldown.model_dump() == {"mode": "thermal", "delta_c": 3.0, "max_wait_s": 600.0,
                                           "seconds": 120.0, "rewarm_s": 2.0}
    assert suite.devices is None or not suite.devices
    assert {m.builtin for m in suite.models} == {"movenet-thunder", "movenet-lightning"}


def test_replace_across_kinds_removes_the_other(lab, capsys):
    lab.crontab.write_text(OTHER_LINES[0] + "\n")
    run_cli(capsys, *install_args(lab, "--cron", "--crontab-file", lab.crontab))
    rc, out, err = run_cli(capsys, *install_args(lab, "--systemd", "--crontab-file", lab.crontab,
                                                 "--replace"))
    if rc == 1:   # no user systemd here: the units are written but the cron line stays
        assert "benchfleet:nightly" in lab.crontab.read_text()
        return
    assert rc == 0, err
    assert lab.crontab.read_text() == OTHER_LINES[0] + "\n"


def test_real_crontab_install_list_remove(lab, capsys):
    if not shutil.which("crontab"):
        pytest.skip("no crontab command here (Debian: apt-get install cron)")
    probe = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 and "no crontab" not in probe.stderr.lower():
        pytest.skip("crontab -l refused here: %s" % probe.stderr.strip())
    before = probe.stdout if probe.returncode == 0 else ""
    name = "bftest-%d" % os.getpid()
    try:
        rc, out, err = run_cli(capsys, *install_args(lab, "--cron", name=name))
        if rc != 0 and "crontab - failed" in err:
            pytest.skip("this user may not install a crontab: %s" % err.strip())
        assert rc == 0, err
        now = subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
        assert now.startswith(before) and now.count("# benchfleet:%s\n" % name) == 1
        rc, out, _ = run_cli(capsys, "list")
        assert any(line.split()[:3] == [name, "cron", "02:30"] for line in out.splitlines())
        rc, out, _ = run_cli(capsys, "remove", name)
        assert rc == 0
        after = subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
        assert after == before
    finally:
        if "benchfleet:%s" % name in subprocess.run(["crontab", "-l"], capture_output=True,
                                                    text=True).stdout:
            schedule.remove_cron(name, None)


# ---------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kind", ["--systemd", "--cron"])
@pytest.mark.parametrize("change, named", [
    ({"name": "Nightly"}, "NAME 'Nightly'"),
    ({"name": "_x"}, "NAME '_x'"),
    ({"name": "a/b"}, "NAME 'a/b'"),
    ({"at": "25:00"}, "--at '25:00'"),
    ({"at": "7"}, "--at '7'"),
    ({"at": "12:60"}, "--at '12:60'"),
    ({"suite": "broken"}, "matrix[0].runtime[0]: unknown backend 'synthetik'"),
    ({"suite": "missing"}, "file not found"),
    ({"inventory": "missing"}, "file not found"),
])
def test_bad_input_is_refused_before_anything_is_written(lab, capsys, kind, change, named):
    if change.get("suite") == "broken":
        lab.suite.write_text(SUITE.replace("runtime: synthetic", "runtime: synthetik"))
    elif change.get("suite") == "missing":
        lab.suite = lab.root / "no-such-suite.yaml"
    if change.get("inventory"):
        lab.inventory = lab.root / "no-such-inventory"
    argv = install_args(lab, kind, "--crontab-file", lab.crontab,
                        name=change.get("name", "nightly"), at=change.get("at", "02:30"))
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2 and named in err, err
    assert nothing_written(lab)


def test_every_problem_at_once(lab, capsys):
    lab.suite.write_text("name: [not a name]\n")
    rc, _, err = run_cli(capsys, *install_args(lab, "--cron", "--crontab-file", lab.crontab,
                                               name="A B", at="24:00"))
    assert rc == 2
    assert "NAME 'A B'" in err and "--at '24:00'" in err and "--suite %s" % lab.suite in err
    assert nothing_written(lab)


def test_remove_unknown_names_what_exists(lab, capsys):
    lab.crontab.write_text("".join(line + "\n" for line in OTHER_LINES))
    rc, _, err = run_cli(capsys, "remove", "nope", "--crontab-file", lab.crontab)
    assert rc == 2 and "nope" in err and "other (cron)" in err
    assert lab.crontab.read_text() == "".join(line + "\n" for line in OTHER_LINES)
