"""Inventory and strict YAML: every error as an exact `file: field: message` line, all at once."""

import os
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.config.inventory import Device, load_inventory
from orchestrator.config.yamlio import load_yaml

REPO = Path(__file__).resolve().parents[1]


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def problems_of(paths):
    with pytest.raises(ConfigError) as info:
        load_inventory(paths)
    return info.value.problems


def test_default_inventory_holds_only_the_devices_a_user_set_up():
    # The seed hardware examples are files to copy, never hosts a default run tries to reach.
    assert load_inventory([REPO / "inventory"]).names() == ["localhost"]
    assert load_inventory([REPO / "inventory"])["localhost"].transport == "local"


def test_example_inventory_loads_cleanly():
    inv = load_inventory([REPO / "inventory" / "examples"])
    assert inv.names() == ["gtx1660-host", "jetson-nano", "rpi4-coral"]
    assert inv["rpi4-coral"].user == "pi" and inv["rpi4-coral"].accelerators == ["edgetpu"]
    assert inv["jetson-nano"].accelerators == ["gpu-nvidia", "jetson"]
    assert inv["gtx1660-host"].source == str(REPO / "inventory" / "examples" / "gtx1660-host.yaml")


def test_defaults_fill_unset_fields(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  box:\n    host: 10.0.0.2\n")
    dev = load_inventory([path])["box"]
    # SSH fields ssh_config can supply stay unset; transport/target.py fills them at use.
    assert (dev.port, dev.user, dev.identity_file, dev.connect_timeout_s) == (None,) * 4
    assert (dev.python, dev.workdir, dev.transport) == ("python3", "~/.benchfleet", "ssh")
    assert dev.command_timeout_s == 60.0
    assert dev.known_hosts_path == os.path.expanduser("~/.ssh/known_hosts")


def test_bad_port_type_names_file_and_field(tmp_path):
    path = write(tmp_path, "rpi4-coral.yaml", "devices:\n  rpi4-coral:\n    host: pi\n    port: '22'\n")
    assert problems_of([path]) == [
        "%s: devices.rpi4-coral.port: Input should be a valid integer" % path]


def test_sexagesimal_port_stays_an_error_not_120(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  box:\n    host: h\n    port: 2:00\n")
    assert problems_of([path]) == ["%s: devices.box.port: Input should be a valid integer" % path]


def test_yaml_11_words_stay_strings(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  box:\n    host: on\n    user: no\n"
                                     "    description: 2026-11-22\n")
    dev = load_inventory([path])["box"]
    assert (dev.host, dev.user, dev.description) == ("on", "no", "2026-11-22")


def test_yaml_core_numbers_and_booleans(tmp_path):
    path = write(tmp_path, "a.yaml", "a: 010\nb: 0x1F\nc: 1e3\nd: true\ne: Yes\nf: 1_000\ng: ~\n")
    assert load_yaml(path) == {"a": 10, "b": 31, "c": 1000.0, "d": True, "e": "Yes", "f": "1_000",
                               "g": None}


def test_duplicate_key_refused_with_lines(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  box:\n    host: h\n    port: 22\n    port: 2222\n")
    assert problems_of([path]) == ["%s: line 5: duplicate key 'port' (first on line 4)" % path]


def test_duplicate_device_in_one_file_is_a_duplicate_key(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  box: {host: a}\n  box: {host: b}\n")
    assert problems_of([path]) == ["%s: line 3: duplicate key 'box' (first on line 2)" % path]


def test_yaml_syntax_error_gives_line(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  box:\n    tags: [x, y\n    host: h\n")
    [problem] = problems_of([path])
    assert problem.startswith("%s: line 4 column 9: invalid YAML: " % path)


def test_unknown_field_and_bad_enum_reported_together(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  box:\n    host: h\n    hots: h\n"
                                     "    accelerators: [tpu]\n    transport: telnet\n")
    assert problems_of([path]) == [
        "%s: devices.box.transport: Input should be 'ssh' or 'local'" % path,
        "%s: devices.box.accelerators[0]: Input should be 'cpu', 'gpu-nvidia', 'edgetpu', "
        "'jetson' or 'npu'" % path,
        "%s: devices.box.hots: unknown field" % path,
    ]


def test_every_bad_file_is_named_at_once(tmp_path):
    a = write(tmp_path, "a.yaml", "devices:\n  one:\n    host: h\n    port: 0\n")
    b = write(tmp_path, "b.yaml", "devices:\n  two:\n    transport: ssh\n")
    missing = tmp_path / "nope.yaml"
    assert problems_of([a, b, missing]) == [
        "%s: file not found" % missing,
        "%s: devices.one.port: Input should be greater than or equal to 1" % a,
        "%s: devices.two: transport ssh needs host (or ssh_alias, an ssh_config Host)" % b,
    ]


def test_duplicate_device_across_files_names_both_files(tmp_path):
    write(tmp_path, "a.yaml", "devices:\n  box: {host: a}\n")
    write(tmp_path, "b.yaml", "devices:\n  box: {host: b}\n")
    assert problems_of([tmp_path]) == [
        "%s: devices.box: duplicate device name, also defined in %s"
        % (tmp_path / "b.yaml", tmp_path / "a.yaml")]


def test_empty_folder_and_missing_devices_mapping(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = write(tmp_path, "bad.yaml", "box:\n  host: h\n")
    assert problems_of([empty, bad]) == [
        "%s: no *.yaml, *.yml or *.ini files in this folder" % empty,
        "%s: expected a top-level `devices:` mapping of name -> fields" % bad]


def test_bad_device_name_env_key_and_name_field(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  Big_Box: {host: h}\n"
                                     "  box: {host: h, env: {lower: x}}\n  other: {name: x}\n")
    assert problems_of([path]) == [
        "%s: devices.Big_Box: device name must match ^[a-z0-9][a-z0-9._-]*$ "
        "(lowercase letters, digits, . _ -)" % path,
        "%s: devices.box.env.lower: String should match pattern '^[A-Z_][A-Z0-9_]*$'" % path,
        "%s: devices.other.name: the name is the mapping key; remove this field" % path,
    ]


def test_ssh_alias_replaces_host_and_local_needs_neither(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  a: {ssh_alias: lab-pi}\n  b: {transport: local}\n")
    inv = load_inventory([path])
    assert inv["a"].host is None and inv["b"].transport == "local"


def test_select_by_name_and_tag_in_spec_order(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  a: {host: h, tags: [gpu]}\n"
                                     "  b: {host: h}\n  c: {host: h, tags: [gpu]}\n")
    inv = load_inventory([path])
    assert [d.name for d in inv.select(["b", "tag:gpu", "a"])] == ["b", "a", "c"]
    assert [d.name for d in inv.select(None)] == ["a", "b", "c"]


def test_select_unknown_name_lists_known_names(tmp_path):
    path = write(tmp_path, "a.yaml", "devices:\n  a: {host: h}\n  b: {host: h}\n")
    with pytest.raises(ConfigError) as info:
        load_inventory([path]).select(["a", "zz", "tag:gpu"], where="--devices")
    assert info.value.problems == [
        "--devices[1]: unknown device 'zz'; known: a, b",
        "--devices[2]: no device has tag 'gpu'; tags: none"]


def test_identity_file_expanded_at_use(tmp_path):
    from orchestrator.transport.target import fabric_config, resolve_target
    dev = Device(name="x", host="h", identity_file="~/.ssh/id")
    assert dev.identity_file == "~/.ssh/id"
    empty = tmp_path / "ssh_config"
    empty.write_text("")
    target = resolve_target(dev, fabric_config(empty))
    assert target.identity_files == [os.path.expanduser("~/.ssh/id")]
    assert target.sources["identity_file"] == "inventory"
