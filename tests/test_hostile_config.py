"""Hostile configuration files: each is refused when it loads, with a line naming the file, the field
and the rule (the allowed range, the limit, the characters allowed), and `benchfleet validate`
exits 2 without a traceback. Nothing here reaches a device.

A: numbers outside a sane range (a 1e9 s cool-down, 1e300 s, 1e20 threads).
B: YAML bombs (aliases that expand exponentially or refer to themselves, deep nesting, huge files).
C: inventory values that can never work (a host or user starting with '-', a shell metacharacter,
   a python with a space, a workdir with '..'), and relative workdirs (relative to the device's home).
"""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config import yamlio
from orchestrator.config.inventory import load_inventory
from orchestrator.config.suite import load_suite
from orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=60):
    """The real CLI in a subprocess, held to 3 GiB of address space so a bomb that gets through
    fails this test instead of the machine."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)


def problems(load, path):
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.problems


def assert_refused(proc, *expected):
    """Exit 2, no traceback, and for each (file, field, words...) a stderr line starting with
    'file: ' that names the field and holds every word."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    for file, field, *words in expected:
        found = [l for l in lines if l.startswith("%s: " % file) and field in l
                 and all(w in l for w in words)]
        assert found, "no line for %s %s %s in:\n%s" % (file, field, words, proc.stderr)


# ---------------------------------------------------------------------------------------------
# A. Numeric settings: every one bounded both ways, the range in the message.

BASE_SUITE = {"name": "t", "models": [{"name": "spin", "synthetic_ms": 0.1}],
              "matrix": [{"runtime": "synthetic"}]}


def suite_with(tmp_path, name, **top):
    doc = dict(BASE_SUITE, **top)
    path = tmp_path / ("%s.yaml" % name)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def entry(**fields):
    return [dict({"runtime": "synthetic"}, **fields)]


# (test id, top-level fields of the suite, the field named, text of the allowed range)
NUMERIC = [
    ("cooldown-1e9", {"cooldown": {"seconds": 1e9}}, "cooldown.seconds", "0 to 3600"),
    ("cooldown-1e300", {"cooldown": {"seconds": 1e300}}, "cooldown.seconds", "0 to 3600"),
    ("cooldown-negative", {"cooldown": {"seconds": -1}}, "cooldown.seconds", "0 to 3600"),
    ("max-wait-1e9", {"cooldown": {"mode": "thermal", "max_wait_s": 1e9}},
     "cooldown.max_wait_s", "3600"),
    ("delta-c-1e6", {"cooldown": {"mode": "thermal", "delta_c": 1e6}}, "cooldown.delta_c", "100"),
    ("case-timeout-1e9", {"settings": {"case_timeout_s": 1e9}}, "settings.case_timeout_s",
     "86400"),
    ("max-duration-1e300", {"settings": {"max_duration_s": 1e300}}, "settings.max_duration_s",
     "43200"),
    ("min-duration-1e9", {"settings": {"min_duration_s": 1e9}}, "settings.min_duration_s",
     "43200"),
    ("warmup-min-1e9", {"settings": {"warmup_min_s": 1e9}}, "settings.warmup_min_s", "3600"),
    ("runs-1e12", {"settings": {"runs": 10 ** 12}}, "settings.runs", "1 to 1000000"),
    ("runs-zero", {"settings": {"runs": 0}}, "settings.runs", "1 to 1000000"),
    ("warmup-runs-1e12", {"settings": {"warmup_runs": 10 ** 12}}, "settings.warmup_runs",
     "0 to 1000000"),
    ("input-pool-1e9", {"settings": {"input_pool": 10 ** 9}}, "settings.input_pool", "1 to 256"),
    ("input-seed-2e64", {"settings": {"input_seed": 2 ** 64}}, "settings.input_seed",
     "0 to 4294967295"),
    ("cv-max-1e300", {"settings": {"cv_max": 1e300}}, "settings.cv_max", "100"),
    ("entry-runs-1e12", {"matrix": entry(settings={"runs": 10 ** 12})},
     "matrix[0].settings.runs", "1 to 1000000"),
    ("entry-timeout-1e9", {"matrix": entry(settings={"case_timeout_s": 1e9})},
     "matrix[0].settings.case_timeout_s", "86400"),
    ("threads-1e20", {"matrix": entry(threads=[10 ** 20])}, "matrix[0].threads[0]", "1 to 1024"),
    ("threads-float-1e20", {"matrix": entry(threads=[1e20])}, "matrix[0].threads[0]",
     "valid integer"),
    ("affinity-1e9", {"matrix": entry(affinity=[[0, 10 ** 9]])}, "matrix[0].affinity[0][1]",
     "0 to 4095"),
    ("synthetic-ms-1e12", {"models": [{"name": "spin", "synthetic_ms": 1e12}]},
     "models[0].synthetic_ms", "60000"),
    ("rewarm-1e9", {"cooldown": {"mode": "thermal", "rewarm_s": 1e9}}, "cooldown.rewarm_s",
     "0 to 600"),
    ("target-fps-1e9", {"settings": {"mode": "paced", "target_fps": 1e9}},
     "settings.target_fps", "0 to 10000"),
    ("duration-1e9", {"settings": {"mode": "sustained", "duration_s": 1e9}},
     "settings.duration_s", "43200"),
    ("interval-1e9", {"settings": {"interval_ms": 1e9}}, "settings.interval_ms", "0 to 60000"),
]


# The modes' rules across settings (agent.schema.mode_problems, the agent checks them too).
MODE_RULES = [
    ("paced-without-fps", {"settings": {"mode": "paced"}}, "settings.target_fps",
     "needs target_fps above 0"),
    ("entry-paced-without-fps", {"matrix": entry(settings={"mode": "paced"})},
     "matrix[0].settings.target_fps", "needs target_fps above 0"),
    ("window-longer-than-run", {"settings": {"mode": "sustained", "duration_s": 20,
                                             "window_s": 30, "case_timeout_s": 100}},
     "settings.window_s", "longer than duration_s"),
    ("sustained-past-timeout", {"settings": {"mode": "sustained", "duration_s": 3000}},
     "settings.case_timeout_s", "must exceed duration_s"),
    ("interval-5ms", {"settings": {"interval_ms": 5}}, "settings.interval_ms", "at least 10 ms"),
    ("mode-typo", {"settings": {"mode": "pace"}}, "settings.mode", "back_to_back"),
    ("arrival-typo", {"settings": {"mode": "paced", "target_fps": 30, "arrival": "random"}},
     "settings.arrival", "poisson"),
]


@pytest.mark.parametrize("fields,field,words", [c[1:] for c in MODE_RULES],
                         ids=[c[0] for c in MODE_RULES])
def test_mode_rules_name_file_field_and_fix(tmp_path, fields, field, words):
    path = suite_with(tmp_path, "s", **fields)
    lines = problems(load_suite, path)
    assert any(l.startswith("%s: %s" % (path, field)) and words in l for l in lines), lines


def test_agent_refuses_the_same_mode_rules_in_a_job():
    from agent import schema
    case = {"settings": dict(schema.DEFAULT_SETTINGS, mode="paced")}
    assert any(p.startswith("cases[0].settings.target_fps: mode paced needs")
               for p in schema.check_case(case))
    good = dict(schema.DEFAULT_SETTINGS, mode="sustained", duration_s=60.0)
    assert schema.mode_problems(good) == []


@pytest.mark.parametrize("fields,field,allowed", [c[1:] for c in NUMERIC],
                         ids=[c[0] for c in NUMERIC])
def test_out_of_range_number_names_file_field_and_range(tmp_path, fields, field, allowed):
    path = suite_with(tmp_path, "s", **fields)
    lines = problems(load_suite, path)
    assert any(l.startswith("%s: %s: " % (path, field)) and allowed in l for l in lines), lines


def test_every_setting_and_cooldown_field_has_a_finite_upper_bound():
    from agent.schema import (BOOL_SETTINGS, DEFAULT_COOLDOWN, DEFAULT_SETTINGS, ENUM_SETTINGS,
                              SETTING_MAXIMUMS)
    from orchestrator.config.suite import COOLDOWN_LIMITS
    assert set(SETTING_MAXIMUMS) == set(DEFAULT_SETTINGS) - set(BOOL_SETTINGS) - set(ENUM_SETTINGS)
    assert all(type(DEFAULT_SETTINGS[name]) is bool for name in BOOL_SETTINGS)
    assert all(DEFAULT_SETTINGS[name] in ENUM_SETTINGS[name] for name in ENUM_SETTINGS)
    for name, default in DEFAULT_SETTINGS.items():
        if name in BOOL_SETTINGS or name in ENUM_SETTINGS:
            continue
        assert default <= SETTING_MAXIMUMS[name] < float("inf"), name
    assert set(COOLDOWN_LIMITS) == set(DEFAULT_COOLDOWN) - {"mode"}
    for name, (low, _, high) in COOLDOWN_LIMITS.items():
        assert low <= DEFAULT_COOLDOWN[name] <= high < float("inf"), name


def test_the_largest_allowed_values_still_load(tmp_path):
    path = suite_with(tmp_path, "edge", settings={
        "warmup_runs": 1000000, "runs": 1000000, "warmup_min_s": 3600, "min_duration_s": 43200,
        "max_duration_s": 43200, "case_timeout_s": 86400, "input_seed": 2 ** 32 - 1,
        "input_pool": 256, "cv_max": 100}, cooldown={"mode": "thermal", "seconds": 3600,
                                                     "delta_c": 100, "max_wait_s": 3600},
        matrix=entry(threads=[1024], affinity=[[4095]]))
    suite = load_suite(path)
    assert suite.cooldown.seconds == 3600.0
    assert suite.expand()[0].threads == 1024


def test_a_matrix_expanding_past_the_case_limit_is_refused(tmp_path):
    # 101 thread counts x 100 affinities: 10100 cases, over the 10000 a suite may hold.
    path = suite_with(tmp_path, "wide", matrix=entry(
        threads=list(range(1, 102)), affinity=[[i] for i in range(100)]))
    lines = problems(load_suite, path)
    assert any(l.startswith("%s: matrix[0]: " % path) and "10100 cases" in l
               and "10000" in l for l in lines), lines


INVENTORY_NUMERIC = [
    ("command-timeout-1e9", {"command_timeout_s": 1e9}, "devices.box.command_timeout_s", "3600"),
    ("connect-timeout-1e300", {"connect_timeout_s": 1e300}, "devices.box.connect_timeout_s",
     "3600"),
]


def device_file(folder, name, **fields):
    path = folder / ("%s.yaml" % name)
    path.write_text(yaml.safe_dump({"devices": {"box": dict({"host": "10.0.0.2"}, **fields)}}))
    return path


@pytest.mark.parametrize("fields,field,allowed", [c[1:] for c in INVENTORY_NUMERIC],
                         ids=[c[0] for c in INVENTORY_NUMERIC])
def test_out_of_range_device_timeout_names_file_field_and_range(tmp_path, fields, field, allowed):
    path = device_file(tmp_path, "d", **fields)
    lines = problems(load_inventory, path)
    assert any(l.startswith("%s: %s: " % (path, field)) and allowed in l for l in lines), lines


def test_validate_refuses_every_out_of_range_number_at_once(tmp_path):
    suites = [(suite_with(tmp_path, cid, **fields), field, allowed)
              for cid, fields, field, allowed in NUMERIC]
    inv = tmp_path / "inv"
    inv.mkdir()
    devices = [(device_file(inv, cid, **fields), field, allowed)
               for cid, fields, field, allowed in INVENTORY_NUMERIC]
    proc = cli("validate", *[s for s, _, _ in suites], "-i", inv)
    assert_refused(proc, *(suites + devices))


# ---------------------------------------------------------------------------------------------
# B. YAML bombs: alias expansion, recursion, nesting depth and file size, for suites and inventory.

def billion_laughs(levels=9, width=9):
    """Anchors l0..l{levels-1}, each a list of `width` aliases of the one before: width**levels
    leaves from a few hundred bytes."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append("l%d: &l%d [%s]" % (i, i, ", ".join(["*l%d" % (i - 1)] * width)))
    return lines


# tflite's delegate_options is a free-form mapping: where a bomb can pass the options check.
TFLITE_HEAD = ("name: t\nmodels:\n  - {name: tiny, builtin: movenet-tiny}\nmatrix:\n"
               "  - runtime: tflite\n")


def bomb_suite(tmp_path, name="bomb"):
    """A suite whose first matrix entry's options hold a billion laughs."""
    path = tmp_path / ("%s.yaml" % name)
    path.write_text(TFLITE_HEAD + "    options:\n      delegate_options:\n" +
                    "".join("        %s\n" % l for l in billion_laughs()))
    return path


def test_alias_bomb_in_options_is_refused_by_validate_and_plan(tmp_path):
    path = bomb_suite(tmp_path)
    lines = problems(load_suite, path)
    assert len(lines) == 1 and lines[0].startswith("%s: line " % path), lines
    assert "alias" in lines[0] and "10000" in lines[0], lines
    for verb in ("validate", "plan"):
        assert_refused(cli(verb, path), (path, "alias", "10000"))


def test_alias_bomb_names_the_field_where_the_budget_ran_out(tmp_path):
    [line] = problems(load_suite, bomb_suite(tmp_path))
    assert "matrix[0].options.delegate_options.l" in line and "alias *l" in line, line


def test_merge_key_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 {%s}" % ", ".join("k%d: v" % i for i in range(50))]
    for i in range(1, 8):
        lines.append("a%d: &a%d {%s}" % (i, i, ", ".join("k%d: {<<: *a%d}" % (j, i - 1)
                                                          for j in range(10))))
    path = tmp_path / "s.yaml"
    path.write_text("\n".join(lines) + "\n")
    [line] = problems(yamlio.load_yaml, path)
    assert line.startswith("%s: line " % path) and "alias" in line, line


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TFLITE_HEAD + "    options: {delegate_options: &loop {self: *loop}}\n")
    [line] = problems(load_suite, path)
    assert line.startswith("%s: line 6 column " % path), line
    assert "matrix[0].options.delegate_options.self" in line and "recursive" in line, line
    assert_refused(cli("plan", path), (path, "matrix[0].options.delegate_options.self", "recursive"))


def test_5000_levels_of_nesting_are_refused_without_a_traceback(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TFLITE_HEAD + "    options: {delegate_options: {deep: %s%s}}\n"
                    % ("[" * 5000, "]" * 5000))
    [line] = problems(load_suite, path)
    assert line.startswith("%s: line 6 column " % path), line
    assert "matrix[0].options.delegate_options.deep" in line and "deeper than 64 levels" in line, line
    assert_refused(cli("validate", path), (path, "matrix[0].options.delegate_options.deep", "64 levels"))


def test_block_nesting_past_the_limit_is_refused_and_at_the_limit_loads(tmp_path):
    def nested(levels):   # a mapping `a:` inside `a:` ..., the innermost holding a scalar
        return "".join("  " * i + "a:\n" for i in range(levels - 1)) + "  " * (levels - 1) + "a: 1\n"
    ok, deep = tmp_path / "ok.yaml", tmp_path / "deep.yaml"
    ok.write_text(nested(63))     # 63 mappings and the scalar: 64 levels
    deep.write_text(nested(64))
    assert yamlio.load_yaml(ok)["a"]["a"]["a"] is not None
    [line] = problems(yamlio.load_yaml, deep)
    assert line.startswith("%s: line 64 column " % deep) and "deeper than 64 levels" in line, line


def test_aliases_cannot_stack_nesting_past_the_limit(tmp_path):
    # Each anchor is 40 levels deep around the one before: few nodes, but 40 x 20 levels in all.
    lines = ["d0: &d0 %s1%s" % ("[" * 40, "]" * 40)]
    lines += ["d%d: &d%d %s*d%d%s" % (i, i, "[" * 40, i - 1, "]" * 40) for i in range(1, 20)]
    path = tmp_path / "s.yaml"
    path.write_text("\n".join(lines) + "\n")
    [line] = problems(yamlio.load_yaml, path)
    assert line.startswith("%s: line 2 column " % path) and "deeper than 64 levels" in line, line


def test_file_over_the_size_cap_is_refused_before_parsing(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    path.write_text("# padding\n" * 100)   # 1000 bytes
    monkeypatch.setattr(yamlio, "MAX_BYTES", 1000)
    assert yamlio.load_yaml(path) is None  # at the cap: read
    path.write_text("# padding\n" * 100 + "\n")
    [line] = problems(yamlio.load_yaml, path)
    assert line == ("%s: larger than 1000 bytes, the most a benchfleet file may hold (a suite or "
                    "an inventory is a few KB): is this the right file?" % path), line


def test_real_size_cap_refuses_a_file_just_over_4_mib_for_suites_and_inventory(tmp_path):
    assert yamlio.MAX_BYTES == 4 * 1024 * 1024
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write("devices:\n  box: {host: h}\n")
        f.write("#" * (yamlio.MAX_BYTES - f.tell() + 1))
    assert big.stat().st_size == yamlio.MAX_BYTES + 1
    proc = cli("validate", big, "-i", big)
    assert_refused(proc, (big, "", "larger than 4 MiB"))
    assert proc.stderr.count("%s: larger than 4 MiB" % big) == 2, proc.stderr   # suite and devices


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_file_is_refused_not_read_for_ever():
    [line] = problems(load_suite, "/dev/zero")
    assert line.startswith("/dev/zero: larger than 4 MiB"), line


def test_bombs_in_an_inventory_file_are_refused(tmp_path):
    inv = tmp_path / "inv"
    inv.mkdir()
    laughs = inv / "laughs.yaml"
    laughs.write_text("devices:\n  box:\n    host: h\n    sensors:\n" +
                      "".join("      %s\n" % l for l in billion_laughs()))
    deep = inv / "deep.yaml"
    deep.write_text("devices:\n  box2:\n    host: h\n    sensors: {x: %s%s}\n"
                    % ("{a: " * 3000, "}" * 3000))
    loop = inv / "loop.yaml"
    loop.write_text("devices:\n  box3: &me\n    host: h\n    sensors: {again: *me}\n")
    lines = problems(load_inventory, inv)
    assert len(lines) == 3, lines
    assert any(l.startswith("%s: line " % laughs) and "devices.box.sensors" in l
               and "alias" in l for l in lines), lines
    assert any(l.startswith("%s: line " % deep) and "devices.box2.sensors.x" in l
               and "64 levels" in l for l in lines), lines
    assert any(l.startswith("%s: line " % loop) and "devices.box3.sensors.again" in l
               and "recursive" in l for l in lines), lines
    assert_refused(cli("validate", "-i", inv),
                   (laughs, "devices.box.sensors", "alias"), (deep, "devices.box2", "64 levels"),
                   (loop, "devices.box3", "recursive"))


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nsettings: &quick {runs: 20, warmup_runs: 2, min_duration_s: 0.05}\n"
                    "models:\n  - {name: spin, synthetic_ms: 0.1}\n"
                    "matrix:\n  - runtime: synthetic\n    settings: {<<: *quick, runs: 30}\n"
                    "  - runtime: synthetic\n    settings: *quick\n")
    suite = load_suite(path)
    assert [suite.settings_for(e)["runs"] for e in suite.matrix] == [30, 20]


# ---------------------------------------------------------------------------------------------
# C. Inventory values that can never work.

# (test id, the field, its value, a word of the rule the message states)
BAD_DEVICE_VALUES = [
    ("host-dash-option", "host", "-oProxyCommand=touch /tmp/pwned", "'-'"),
    ("host-space", "host", "pi 4", "letters, digits"),
    ("host-newline", "host", "pi\nProxyCommand x", "letters, digits"),
    ("host-semicolon", "host", "pi;reboot", "letters, digits"),
    ("host-command-substitution", "host", "$(reboot)", "letters, digits"),
    ("host-backtick", "host", "`reboot`", "letters, digits"),
    ("host-pipe", "host", "pi|sh", "letters, digits"),
    ("host-empty", "host", "", "empty"),
    ("user-dash-option", "user", "-oProxyCommand=x", "'-'"),
    ("user-space", "user", "pi pi", "letters, digits"),
    ("user-semicolon", "user", "pi;id", "letters, digits"),
    ("user-newline", "user", "pi\nid", "letters, digits"),
    ("ssh-alias-dash", "ssh_alias", "-F/dev/null", "'-'"),
    ("ssh-alias-space", "ssh_alias", "a b", "letters, digits"),
    ("proxy-jump-dash", "proxy_jump", "-oProxyCommand=x", "'-'"),
    ("proxy-jump-second-hop-dash", "proxy_jump", "bastion,-oProxyCommand=x", "'-'"),
    ("proxy-jump-space", "proxy_jump", "bastion;id", "letters, digits"),
    ("python-space", "python", "python3 -c 'import os'", "no spaces"),
    ("python-semicolon", "python", "python3;reboot", "no spaces"),
    ("python-dash", "python", "-c", "'-'"),
    ("python-tilde", "python", "~/venv/bin/python3", "absolute path"),
    ("python-relative", "python", "venv/bin/python3", "absolute path"),
    ("python-empty", "python", "", "empty"),
    ("workdir-dotdot", "workdir", "../elsewhere", "'..'"),
    ("workdir-inner-dotdot", "workdir", "/opt/bench/../../etc", "'..'"),
    ("workdir-home-dotdot", "workdir", "~/a/../../b", "'..'"),
    ("workdir-newline", "workdir", "/opt/bench\nx", "control character"),
    ("workdir-other-home", "workdir", "~root/bench", "~/"),
    ("workdir-dollar", "workdir", "$HOME/bench", "not expanded"),
    ("workdir-empty", "workdir", "", "empty"),
]


@pytest.mark.parametrize("field,value,rule", [c[1:] for c in BAD_DEVICE_VALUES],
                         ids=[c[0] for c in BAD_DEVICE_VALUES])
def test_device_value_that_cannot_work_names_file_field_and_rule(tmp_path, field, value, rule):
    fields = {"ssh_alias": "lab"} if field == "host" else {}
    path = device_file(tmp_path, "d", **dict(fields, **{field: value}))
    lines = problems(load_inventory, path)
    assert any(l.startswith("%s: devices.box.%s: " % (path, field)) and rule in l
               for l in lines), lines


def test_validate_refuses_every_bad_device_value_at_once(tmp_path):
    inv = tmp_path / "inv"
    inv.mkdir()
    expected = []
    for i, (cid, field, value, rule) in enumerate(BAD_DEVICE_VALUES):
        path = inv / ("%s.yaml" % cid)
        path.write_text(yaml.safe_dump({"devices": {"d%d" % i: {
            "ssh_alias": "lab", field: value} if field == "host" else {
            "host": "10.0.0.2", field: value}}}))
        expected.append((path, "devices.d%d.%s: " % (i, field), rule))
    assert_refused(cli("validate", "-i", inv), *expected)


def test_ansible_inventory_values_are_checked_the_same_way(tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_text("[lab]\npi1 ansible_host=-oProxyCommand=x ansible_user=pi\n"
                    "pi2 ansible_python_interpreter='python3;id'\n")
    lines = problems(load_inventory, path)
    assert any(l.startswith(str(path)) and "host" in l and "'-'" in l for l in lines), lines
    assert any(l.startswith(str(path)) and "python" in l and "no spaces" in l for l in lines), lines


GOOD_DEVICE_VALUES = [
    ("host", "192.168.1.42"), ("host", "rpi4.local"), ("host", "::1"), ("host", "fe80::1%eth0"),
    ("host", "my_host-2.lab.example.com"), ("user", "pi"), ("user", "first.last@corp.example"),
    ("user", "_svc-bench"), ("ssh_alias", "lab-pi.4"), ("proxy_jump", "admin@bastion:2222,gw"),
    ("python", "python3"), ("python", "python3.6"), ("python", "/usr/bin/python3"),
    ("python", sys.executable), ("workdir", "/opt/benchfleet"), ("workdir", "~"),
    ("workdir", "~/.benchfleet"), ("workdir", "/srv/bench work/{x}"),
]


@pytest.mark.parametrize("field,value", GOOD_DEVICE_VALUES)
def test_ordinary_device_values_still_load(tmp_path, field, value):
    path = device_file(tmp_path, "d", **{field: value})
    assert getattr(load_inventory(path)["box"], field) == value


@pytest.mark.parametrize("given,stored", [
    ("bench", "~/bench"), ("./bench", "~/bench"), ("bench/runs/", "~/bench/runs/"),
    ("./", "~"), (".", "~")])
def test_a_relative_workdir_is_relative_to_the_device_home_not_the_controller_cwd(
        tmp_path, given, stored):
    path = device_file(tmp_path, "d", transport="local", workdir=given)
    device = load_inventory(path)["box"]
    assert device.workdir == stored
    from orchestrator.transport.local import LocalTransport
    expanded = LocalTransport("box").expand(device.workdir)
    assert expanded == os.path.expanduser(stored) and not expanded.startswith(os.getcwd() + "/b")


def test_seed_and_example_inventories_still_load():
    inv = load_inventory([ROOT / "inventory", ROOT / "inventory" / "examples"])
    assert inv.names() == ["localhost", "gtx1660-host", "jetson-nano", "rpi4-coral"]
    assert {d.workdir for d in inv} == {"~/.cache/benchfleet/localhost", "~/.benchfleet"}


def test_a_sustained_case_needs_its_timeout_past_duration_not_max_duration(tmp_path):
    """max_duration_s does not bound a sustained case (it measures duration_s), so a timeout
    below max_duration_s but above duration_s loads; the same timeout back to back does not."""
    ok = suite_with(tmp_path, "ok", settings={"mode": "sustained", "duration_s": 60,
                                              "case_timeout_s": 120})
    assert load_suite(ok).settings_for(load_suite(ok).matrix[0])["mode"] == "sustained"
    bad = suite_with(tmp_path, "bad", settings={"case_timeout_s": 120})
    assert any("must exceed max_duration_s" in l for l in problems(load_suite, bad))
