"""Ansible inventories given with -i: INI and YAML files become Devices (groups -> tags, Ansible's
variable precedence), and every Ansible feature benchfleet does not support is one exact error."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.config.inventory import Device, load_inventory

ROOT = Path(__file__).resolve().parents[1]
PATTERN = "^[a-z0-9][a-z0-9._-]*$"


def write(folder, name, text, mode=0o644):
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    os.chmod(path, mode)
    return path


def problems_of(paths):
    with pytest.raises(ConfigError) as info:
        load_inventory(paths)
    return info.value.problems


def dump(inv):
    return {d.name: d.model_dump() for d in inv}


def expect(**devices):
    """{name: fields} -> what Device dumps for them, every unset field at the model's default."""
    return {name: Device(name=name, **fields).model_dump() for name, fields in devices.items()}


LAB_INI = """\
    # the lab, as Ansible keeps it
    gateway ansible_host=10.0.0.1 ansible_user=admin

    [pis]
    pi[01:02]
    pi03 ansible_host=10.0.0.13 ansible_port=2203 benchfleet_accelerators="['edgetpu']"

    [jetsons]
    nano ansible_host=10.0.0.20 ansible_ssh_private_key_file=~/.ssh/jetson

    [arm:children]
    pis
    jetsons

    [arm:vars]
    ansible_user=pi
    ansible_python_interpreter=/usr/bin/python3
    benchfleet_workdir=/opt/benchfleet
    ntp_server=10.0.0.1

    [jetsons:vars]
    ansible_user=nvidia
    benchfleet_tags=['gpu']
    benchfleet_accelerators=['gpu-nvidia', 'jetson']

    [all:vars]
    ansible_port=2222
    benchfleet_known_hosts=~/.ssh/lab_known_hosts
    """


def test_ini_groups_children_and_vars_map_to_exact_devices(tmp_path):
    path = write(tmp_path, "hosts.ini", LAB_INI)
    inv = load_inventory([path])
    arm = dict(port=2222, user="pi", python="/usr/bin/python3", workdir="/opt/benchfleet",
               known_hosts="~/.ssh/lab_known_hosts", tags=["arm", "pis"])
    assert dump(inv) == expect(
        gateway=dict(host="10.0.0.1", user="admin", port=2222, known_hosts="~/.ssh/lab_known_hosts"),
        pi01=dict(arm, host="pi01"),
        pi02=dict(arm, host="pi02"),
        pi03=dict(arm, host="10.0.0.13", port=2203, accelerators=["edgetpu"]),
        nano=dict(arm, host="10.0.0.20", user="nvidia", identity_file="~/.ssh/jetson",
                  tags=["arm", "jetsons", "gpu"], accelerators=["gpu-nvidia", "jetson"]))
    assert {d.source for d in inv} == {str(path)}


def test_yaml_inventory_with_any_top_level_group_maps_the_same_way(tmp_path):
    path = write(tmp_path, "lab.yml", """\
        lab:
          vars: {ansible_user: pi, ntp_server: 10.0.0.1}
          hosts:
            gateway: {ansible_host: 10.0.0.1, ansible_user: admin}
          children:
            pis:
              hosts:
                pi[01:02]:
                pi03: {ansible_host: 10.0.0.13, ansible_port: 2203, benchfleet_accelerators: [edgetpu]}
            jetsons:
              vars: {ansible_user: nvidia, benchfleet_tags: [gpu]}
              hosts:
                nano: {ansible_host: 10.0.0.20, benchfleet_env: {CUDA_VISIBLE_DEVICES: "0"}}
        spare:
          hosts:
            pi03:
        """)
    assert dump(load_inventory([path])) == expect(
        gateway=dict(host="10.0.0.1", user="admin", tags=["lab"]),
        pi01=dict(host="pi01", user="pi", tags=["lab", "pis"]),
        pi02=dict(host="pi02", user="pi", tags=["lab", "pis"]),
        pi03=dict(host="10.0.0.13", port=2203, user="pi", tags=["lab", "spare", "pis"],
                  accelerators=["edgetpu"]),
        nano=dict(host="10.0.0.20", user="nvidia", tags=["lab", "jetsons", "gpu"],
                  env={"CUDA_VISIBLE_DEVICES": "0"}))


def test_precedence_is_all_then_parent_then_child_then_host(tmp_path):
    path = write(tmp_path, "hosts.ini", """\
        loose
        [all:vars]
        benchfleet_description=all
        [region:children]
        site
        [region:vars]
        benchfleet_description=region
        [region]
        r1
        [site:vars]
        benchfleet_description=site
        [site]
        s1
        s2 benchfleet_description=host
        """)
    inv = load_inventory([path])
    assert {d.name: d.description for d in inv} == {
        "loose": "all", "r1": "region", "s1": "site", "s2": "host"}
    assert inv["s1"].tags == ["region", "site"]


def test_sibling_groups_merge_by_name_unless_a_priority_says_otherwise(tmp_path):
    plain = write(tmp_path, "a.ini", "[x]\nbox\n[y]\nbox\n[x:vars]\nbenchfleet_description=x\n"
                                     "[y:vars]\nbenchfleet_description=y\n")
    assert load_inventory([plain])["box"].description == "y"
    ranked = write(tmp_path, "b.ini", "[x]\nbox\n[y]\nbox\n[x:vars]\nbenchfleet_description=x\n"
                                      "ansible_group_priority=10\n[y:vars]\nbenchfleet_description=y\n")
    assert load_inventory([ranked])["box"].description == "x"


def test_host_ranges_expand_with_padding_steps_letters_and_a_port(tmp_path):
    path = write(tmp_path, "hosts.ini", """\
        [lab]
        node[1:3]
        n[01:10:4]
        rack[a:b]-[1:2]
        box:2200
        """)
    inv = load_inventory([path])
    assert inv.names() == ["node1", "node2", "node3", "n01", "n05", "n09",
                           "racka-1", "racka-2", "rackb-1", "rackb-2", "box"]
    assert (inv["box"].host, inv["box"].port) == ("box", 2200)


def test_bad_host_ranges_say_what_a_range_is(tmp_path):
    path = write(tmp_path, "hosts.ini", "[lab]\nx[1:b]\ny[05:7]\nz[3:1]\nw[1:2:0]\n")
    assert problems_of([path]) == [
        "%s: line 2: host pattern 'x[1:b]': range bounds must be both numbers or both single "
        "letters" % path,
        "%s: line 3: host pattern 'y[05:7]': a zero-padded range needs begin and end of equal "
        "length" % path,
        "%s: line 4: host pattern 'z[3:1]': range begins after it ends" % path,
        "%s: line 5: host pattern 'w[1:2:0]': range step must be a positive number" % path]


def test_local_connection_and_ssh_synonyms(tmp_path):
    path = write(tmp_path, "hosts.ini", """\
        me ansible_connection=local ansible_python_interpreter=auto_silent
        a ansible_connection=smart
        b ansible_connection=paramiko
        c ansible_connection=ansible.builtin.ssh ansible_host=10.0.0.3
        """)
    assert dump(load_inventory([path])) == expect(
        me=dict(transport="local"), a=dict(host="a"), b=dict(host="b"), c=dict(host="10.0.0.3"))


def test_ini_values_follow_ansible_literal_rules(tmp_path):
    path = write(tmp_path, "hosts.ini", """\
        [g]
        a ansible_port=2201 ansible_user="'1000'" benchfleet_connect_timeout_s=2.5
        b benchfleet_description="a box with spaces"
        [g:vars]
        ansible_port='2202'
        benchfleet_command_timeout_s=30.0
        benchfleet_description='42'
        """)
    inv = load_inventory([path])
    assert (inv["a"].port, inv["a"].user, inv["a"].connect_timeout_s) == (2201, "1000", 2.5)
    assert (inv["b"].port, inv["b"].description, inv["b"].command_timeout_s) == (
        2202, "a box with spaces", 30.0)
    assert inv["a"].description == "42"


def test_unquoted_number_for_a_string_field_names_line_host_and_variable(tmp_path):
    path = write(tmp_path, "hosts.ini", "[g]\nb ansible_user=1000 "
                                        "benchfleet_command_timeout_s=\"'30'\"\n")
    assert problems_of([path]) == [
        "%s: line 2: host b: ansible_user: Input should be a valid string" % path,
        "%s: line 2: host b: benchfleet_command_timeout_s: Input should be a valid number" % path]


def test_a_bad_group_value_is_reported_once_for_all_its_hosts(tmp_path):
    path = write(tmp_path, "hosts.ini", "[pis]\npi[1:4]\n[pis:vars]\n"
                                        "benchfleet_accelerators=['edgetpu', 'tpu']\n")
    assert problems_of([path]) == [
        "%s: line 4: group pis: benchfleet_accelerators[1]: Input should be 'cpu', 'gpu-nvidia', "
        "'edgetpu', 'jetson' or 'npu'" % path]


BECOME = ("not supported by benchfleet; benchfleet runs everything as the SSH user and never "
          "escalates: set ansible_user to a user that may run the benchmarks")
KEYS = "not supported by benchfleet; benchfleet logs in with SSH keys only: set " \
       "ansible_ssh_private_key_file"
SSH_CONFIG = ("not supported by benchfleet; put those options under a Host in ~/.ssh/config and "
              "set benchfleet_ssh_alias to that Host")
SUPPORTED = ("not supported by benchfleet; benchfleet reads ansible_host, ansible_port, "
             "ansible_user, ansible_ssh_private_key_file, ansible_python_interpreter, "
             "ansible_connection, ansible_group_priority and benchfleet_<field>")


@pytest.mark.parametrize("text, expected", [
    ("[pis]\npi4 ansible_become=true\n", "line 2: host pi4: ansible_become: " + BECOME),
    ("[pis]\npi4\n[pis:vars]\nansible_become_method=sudo\n",
     "line 4: group pis: ansible_become_method: " + BECOME),
    ("pi4 ansible_password=secret\n", "line 1: host pi4: ansible_password: " + KEYS),
    ("pi[1:3] ansible_ssh_pass=secret\n", "line 1: host pi[1:3]: ansible_ssh_pass: " + KEYS),
    ("[pis]\npi4\n[pis:vars]\nansible_ssh_common_args=-o ProxyJump=bastion\n",
     "line 4: group pis: ansible_ssh_common_args: " + SSH_CONFIG),
    ("pi4 ansible_ssh_extra_args='-o Compression=yes'\n",
     "line 1: host pi4: ansible_ssh_extra_args: " + SSH_CONFIG),
    ("win ansible_shell_type=powershell\n",
     "line 1: host win: ansible_shell_type: not supported by benchfleet; benchfleet needs a "
     "POSIX sh on the device"),
    ("win ansible_winrm_transport=ntlm\n", "line 1: host win: ansible_winrm_transport: " + SUPPORTED),
    ("win ansible_connection=winrm\n", "line 1: host win: ansible_connection: 'winrm': not "
     "supported by benchfleet; it connects over ssh (ssh, smart, paramiko) or local"),
    ("pi4 ansible_host=\"{{ lab_net }}.4\"\n", "line 1: host pi4: ansible_host: '{{ lab_net }}.4' "
     "is a Jinja template; benchfleet does not evaluate templates: write the value itself"),
    ("pi4 benchfleet_name=x\n", "line 1: host pi4: benchfleet_name: the device name is the "
     "Ansible host name; rename the host"),
    ("[g:vars]\nbenchfleet_hots=h\n[g]\npi4\n", "line 2: group g: benchfleet_hots: unknown "
     "benchfleet field 'hots'; fields: " + ", ".join(f for f in Device.model_fields if f != "name")),
    ("Pi4 ansible_host=10.0.0.4\n", "line 1: host Pi4: device name must match %s (lowercase "
     "letters, digits, . _ -); rename the host and keep its address in ansible_host" % PATTERN),
    ("[Pis]\npi4\n", "line 1: group Pis: a group becomes a device tag, so its name must match "
     + PATTERN),
    ("pi4 ansible_user=pi benchfleet_user=root\n", "line 1: host pi4: ansible_user (host pi4, "
     "line 1) and benchfleet_user (host pi4, line 1) both set user; keep one"),
    ("[arm:children]\npis\n", "line 2: [arm:children] includes undefined group 'pis': add a [pis] "
     "section"),
    ("[pis:vars]\nansible_user=pi\n", "line 1: [pis:vars] is for an undefined group 'pis': add a "
     "[pis] section"),
    ("[pis:hostz]\npi4\n", "line 1: section [pis:hostz]: unknown section type 'hostz'; Ansible "
     "has [group], [group:vars] and [group:children]"),
    ("pi4 ansible_user\n", "line 1: expected key=value host variable, got 'ansible_user'"),
])
def test_unsupported_ini_feature_is_one_exact_error(tmp_path, text, expected):
    path = write(tmp_path, "hosts.ini", text)
    assert problems_of([path]) == ["%s: %s" % (path, expected)]


def test_yaml_vault_values_and_plugins_are_errors_with_lines(tmp_path):
    vaulted = write(tmp_path, "lab.yaml", """\
        all:
          vars:
            db_password: !vault |
              $ANSIBLE_VAULT;1.1;AES256
              6162
          hosts:
            pi4:
              ansible_ssh_private_key_file: !vault |
                $ANSIBLE_VAULT;1.1;AES256
                6162
              benchfleet_workdir: !unsafe /opt/{bf}
          children:
            pis:
              hostz: {pi5: }
        """)
    plugin = write(tmp_path, "aws_ec2.yml", "plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n")
    # The vaulted playbook variable (db_password) is not benchfleet's: ignored like all playbook data.
    assert problems_of([vaulted, plugin]) == [
        "%s: line 8: host pi4: ansible_ssh_private_key_file: vault-encrypted (!vault); benchfleet "
        "cannot decrypt Ansible Vault: write this value in plain text" % vaulted,
        "%s: line 14: group pis: hostz: unexpected key; an Ansible group holds only hosts, "
        "children and vars" % vaulted,
        "%s: plugin: amazon.aws.aws_ec2: an Ansible inventory plugin (a dynamic inventory) is not "
        "run by benchfleet; save the merged hosts with `ansible-inventory -i %s --list --yaml > "
        "hosts.yaml` and pass that file" % (plugin, plugin)]


def test_unsafe_tag_is_plain_text(tmp_path):
    path = write(tmp_path, "lab.yaml", "all:\n  hosts:\n    pi4: {benchfleet_workdir: !unsafe '/opt/{bf}'}\n")
    assert load_inventory([path])["pi4"].workdir == "/opt/{bf}"


def test_var_folders_scripts_and_encrypted_files_are_refused(tmp_path):
    ini = write(tmp_path / "lab", "hosts.ini", "pi4\n")
    write(tmp_path / "lab" / "group_vars", "all.yml", "ansible_user: pi\n")
    yml = write(tmp_path / "lab2", "hosts.yaml", "all:\n  hosts:\n    pi5:\n")
    (tmp_path / "lab2" / "host_vars").mkdir()
    script = write(tmp_path, "ec2.py", "#!/usr/bin/env python3\nprint('{}')\n", mode=0o755)
    vault = write(tmp_path, "secret.ini", "$ANSIBLE_VAULT;1.1;AES256\n6162636465\n")
    flatten = "save the merged hosts with `ansible-inventory -i %s --list --yaml > hosts.yaml`"
    assert problems_of([ini, yml, script, vault]) == [
        "%s: group_vars/ next to this file is not read by benchfleet; move those variables into "
        "this file, or %s" % (ini, flatten % ini),
        "%s: host_vars/ next to this file is not read by benchfleet; move those variables into "
        "this file, or %s" % (yml, flatten % yml),
        "%s: an executable (dynamic) inventory script is not run by benchfleet; %s and pass that "
        "file" % (script, flatten % script),
        "%s: encrypted with Ansible Vault, which benchfleet cannot decrypt; keep the hosts in a "
        "plain file (benchfleet needs no passwords)" % vault]


def test_every_problem_of_every_file_at_once(tmp_path):
    ini = write(tmp_path, "hosts.ini", "[pis]\npi4 ansible_become=true\nPi5\n[pis:vars]\n"
                                       "ansible_port=http\n")
    bad_yaml = write(tmp_path, "box.yaml", "devices:\n  box: {host: h, port: 0}\n")
    assert problems_of([ini, bad_yaml]) == [
        "%s: line 2: host pi4: ansible_become: %s" % (ini, BECOME),
        "%s: line 3: host Pi5: device name must match %s (lowercase letters, digits, . _ -); "
        "rename the host and keep its address in ansible_host" % (ini, PATTERN),
        "%s: line 5: group pis: ansible_port: Input should be a valid integer" % ini,
        "%s: devices.box.port: Input should be greater than or equal to 1" % bad_yaml]


def test_folder_mixes_benchfleet_yaml_ansible_ini_and_ansible_yaml(tmp_path):
    lab = tmp_path / "lab"
    write(lab, "a-local.yaml", "devices:\n  localhost: {transport: local}\n")
    write(lab, "b-ansible.yaml", "gpus:\n  hosts:\n    gtx: {ansible_host: 10.0.0.9}\n")
    write(lab, "hosts.ini", "[pis]\npi4 ansible_host=10.0.0.4\n")
    write(lab, "hosts", "[jetsons]\nnano\n")   # Ansible's usual suffixless name
    write(lab, "README.md", "[not] an inventory\n")
    inv = load_inventory([lab])
    assert inv.names() == ["localhost", "gtx", "nano", "pi4"]
    assert (inv["pi4"].source, inv["pi4"].tags) == (str(lab / "hosts.ini"), ["pis"])
    assert (inv["gtx"].source, inv["gtx"].tags) == (str(lab / "b-ansible.yaml"), ["gpus"])
    write(lab, "more.ini", "localhost ansible_connection=local\n")
    assert problems_of([lab]) == ["%s: devices.localhost: duplicate device name, also defined in %s"
                                  % (lab / "more.ini", lab / "a-local.yaml")]


def test_executable_in_an_inventory_folder_is_refused_not_skipped(tmp_path):
    write(tmp_path, "a.yaml", "devices:\n  box: {host: h}\n")
    script = write(tmp_path, "inventory.sh", "#!/bin/sh\necho '{}'\n", mode=0o755)
    [problem] = problems_of([tmp_path])
    assert problem.startswith("%s: an executable (dynamic) inventory script is not run" % script)


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=dict(os.environ, **(env or {})), capture_output=True,
                          text=True, timeout=300)


def test_cli_lists_an_ansible_inventory(tmp_path):
    path = write(tmp_path, "hosts.ini", "me ansible_connection=local\n[pis]\n"
                                        "pi[1:2] ansible_user=pi ansible_port=2201\n"
                                        "[pis:vars]\nansible_host=10.9.9.9\nbenchfleet_accelerators="
                                        "['edgetpu']\n")
    proc = cli("devices", "list", "-i", path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows == [["NAME", "TRANSPORT", "TARGET", "TAGS", "ACCELERATORS"],
                    ["me", "local", "(this", "machine)", "-", "-"],
                    ["pi1", "ssh", "pi@10.9.9.9:2201", "pis", "edgetpu"],
                    ["pi2", "ssh", "pi@10.9.9.9:2201", "pis", "edgetpu"]]
    bad = write(tmp_path, "bad.ini", "pi4 ansible_become=yes\n")
    proc = cli("devices", "list", "-i", bad)
    assert proc.returncode == 2
    assert "%s: line 1: host pi4: ansible_become: not supported by benchfleet" % bad in proc.stderr


def test_devices_probe_reaches_sshd_devices_from_an_ansible_ini(tmp_path, ssh_lab):
    lines = ["[lab]"]
    for dev in ssh_lab.devices:
        lines.append("%s ansible_host=%s ansible_port=%d ansible_user=%s "
                     "ansible_ssh_private_key_file=%s benchfleet_known_hosts=%s "
                     "benchfleet_workdir=%s" % (dev.name, dev.host, dev.port, dev.user,
                                                dev.identity_file, dev.known_hosts, dev.workdir))
    lines += ["[lab:vars]", "ansible_python_interpreter=%s" % sys.executable,
              "benchfleet_connect_timeout_s=5.0"]
    inv = write(tmp_path, "hosts.ini", "\n".join(lines) + "\n")
    env = {"BENCHFLEET_CACHE": str(tmp_path / "cache")}
    proc = cli("devices", "probe", "-i", inv, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for dev in ssh_lab.devices:
        cached = json.loads((tmp_path / "cache/probes" / (dev.name + ".json")).read_text())
        assert cached["python"]["executable"] == sys.executable
        assert list(Path(dev.workdir, "agent").glob("*.pyz"))
