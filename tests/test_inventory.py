"""The inventory: the example is valid; every class of problem is reported at once."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tcbuild import InputError, RecipeError
from tcbuild.config.inventory import Group
from tcbuild.config.inventoryfile import load_inventory

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = """
[cluster]
boot_server = "10.1.1.1"
internal_subnet = "10.1.1.0/24"
internal_router = "10.1.1.1"
external_network = "172.16.0.0/16"
external_gateway = "172.16.1.1"
nfs_export = "/srv/gameserver"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def test_example_inventory() -> None:
    inventory = load_inventory(ROOT / "examples/cluster.toml")
    cluster = inventory.cluster
    assert [h.name for h in inventory.hosts] == ["server1", "server2"]
    assert inventory.hosts[0].second_ip == IPv4Address("172.16.1.5")
    assert inventory.hosts[1].group == "canary" and inventory.groups["canary"].append
    assert cluster.log_host == cluster.nfs_server == cluster.boot_server  # defaults
    assert cluster.template_vars()["external_broadcast"] == "172.16.255.255"
    assert cluster.template_vars()["external_netmask"] == "255.255.0.0"
    assert inventory.hosts[0].fqdn(cluster.domain) == "server1.example.com"


def test_every_problem_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, CLUSTER.replace('external_gateway = "172.16.1.1"',
                                           'external_gateway = "172.17.0.1"') + """
domain = "bad_domain.example"
syslog_port = 70000

[[host]]
name = "server1"
mac = "ab:cd:ef:12:34:56"
ip = "10.1.1.5"
second_ip = "172.16.1.5"

[[host]]
name = "Server1"
mac = "52:54:00:12:34:56"
ip = "10.1.2.5"
second_ip = "172.16.1.5"

[[host]]
name = "-bad-"
mac = "52-54-00-12-34-56"
ip = "10.1.1.255"
second_ip = "10.1.1.7"
group = "nope"
colour = "red"

[[host]]
name = "server4"
mac = "5254.0012.3457"
ip = "10.1.1.1"
second_ip = "not an ip"
""")
    with pytest.raises(RecipeError) as info:
        load_inventory(path)
    found = [line.split(": ", 1)[1] for line in info.value.problems]
    expected = [
        "cluster.domain: 'bad_domain.example' is not a DNS domain name",
        "cluster.external_gateway: 172.17.0.1 is outside the external network 172.16.0.0/16",
        "cluster.syslog_port: 70000 is not a port number",
        "host[0].mac: ab:cd:ef:12:34:56 is a multicast address; no network card has one",
        "host[1].ip: 10.1.2.5 is outside the internal subnet 10.1.1.0/24",
        "host[1].name: server1 is also used by host[0]",
        "host[1].second_ip: 172.16.1.5 is also used by host[0]",
        "host[2].colour: unknown key",
        "host[2].name: '-bad-' is not a valid host name",
        "host[2].ip: 10.1.1.255 is the internal subnet's network or broadcast address",
        "host[2].second_ip: 10.1.1.7 is outside the external network 172.16.0.0/16",
        "host[2].group: no group 'nope' (defined: none)",
        "host[2].mac: 52:54:00:12:34:56 is also used by host[1]",
        "host[3].mac: '5254.0012.3457' is not a MAC address like 52:54:00:12:34:56",
        "host[3].ip: 10.1.1.1 is the cluster's own address",
        "host[3].second_ip: 'not an ip' is not an IPv4 address",
    ]
    for fragment in expected:
        assert any(line.startswith(fragment) for line in found), (fragment, found)
    assert len(found) == len(expected), found
    assert all(line.startswith(f"{path}: ") for line in info.value.problems)


def test_missing_cluster_and_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"cluster: missing table"):
        load_inventory(write(tmp_path, '[[host]]\nname = "a"\n'))
    with pytest.raises(InputError, match=r"cluster\.toml:2:\d+: invalid TOML"):
        load_inventory(write(tmp_path, "[cluster]\nboot_server = \n"))


def test_group_needs_recipe_or_append(tmp_path: Path) -> None:
    path = write(tmp_path, CLUSTER + '[group.a]\n[group.b]\nrecipe = "missing.toml"\n')
    with pytest.raises(RecipeError) as info:
        load_inventory(path)
    found = [line.split(": ", 1)[1] for line in info.value.problems]
    assert found[0] == "group.a: needs a recipe or an append line"
    assert found[1].startswith("group.b.recipe: recipe 'missing.toml' does not exist")


def test_values_the_daemons_or_the_node_would_misread(tmp_path: Path) -> None:
    """Path characters rsyslog, exports or a shell interpret; an FQDN too long for a hostname."""
    domain = "rack-07.datacenter-west.gameservers.example.com"
    path = write(tmp_path, CLUSTER.replace('"/srv/gameserver"', '"/srv/game server"') + f"""
domain = "{domain}"
log_dir = "/var/log/node%logs"
tftp_root = "/srv/tftp$ROOT"

[[host]]
name = "gameserver-node-0001"
mac = "52:54:00:12:34:56"
ip = "10.1.1.5"
second_ip = "172.16.1.5"

[[host]]
name = "gs2"
mac = "52:54:00:12:34:57"
ip = "10.1.1.6"
second_ip = "172.16.1.6"
""")
    with pytest.raises(RecipeError) as info:
        load_inventory(path)
    found = [line.split(": ", 1)[1] for line in info.value.problems]
    expected = [
        "cluster.nfs_export: '/srv/game server' is not an absolute path of letters, digits",
        "cluster.tftp_root: '/srv/tftp$ROOT' is not an absolute path",
        "cluster.log_dir: '/var/log/node%logs' is not an absolute path",
        f"host[0].name: 'gameserver-node-0001.{domain}' has 68 characters; the node sets it as "
        "its hostname, which Linux limits to 64",
    ]
    assert len(found) == len(expected), found
    for line, fragment in zip(found, expected, strict=True):
        assert line.startswith(fragment), (fragment, line)


def test_boot_servers_and_http_url(tmp_path: Path) -> None:
    """Defaults: one boot server (boot_server), no HTTP boot; a pair and a URL when given."""
    cluster = load_inventory(write(tmp_path, CLUSTER)).cluster
    assert cluster.boot_servers == (IPv4Address("10.1.1.1"),) and cluster.http_url is None
    cluster = load_inventory(write(tmp_path, CLUSTER + 'boot_servers = ["10.1.1.2", "10.1.1.1"]\n'
                                   'http_url = "http://10.1.1.1:8080/boot/"\n')).cluster
    # boot_server first: it is the primary of the pair
    assert cluster.boot_servers == (IPv4Address("10.1.1.1"), IPv4Address("10.1.1.2"))
    assert cluster.http_url == "http://10.1.1.1:8080/boot/"


@pytest.mark.parametrize(("lines", "problem"), [
    ('boot_servers = []', "cluster.boot_servers: expected a list of 1 or 2 IPv4 addresses"),
    ('boot_servers = ["10.1.1.1", "10.1.1.2", "10.1.1.3"]',
     "cluster.boot_servers: expected a list of 1 or 2"),
    ('boot_servers = "10.1.1.2"', "cluster.boot_servers: expected a list of 1 or 2"),
    ('boot_servers = ["10.1.1.2", "10.1.1.2"]',
     "cluster.boot_servers[1]: 10.1.1.2 is listed twice"),
    ('boot_servers = ["10.1.1.1", "10.1.2.2"]',
     "cluster.boot_servers[1]: 10.1.2.2 is outside the internal subnet 10.1.1.0/24"),
    ('boot_servers = ["10.1.1.1", "ten"]', "cluster.boot_servers[1]: 'ten' is not an IPv4 address"),
    ('boot_servers = ["10.1.1.2", "10.1.1.3"]',
     "cluster.boot_servers: does not include boot_server 10.1.1.1"),
    ('http_url = "https://10.1.1.1/"', "cluster.http_url: 'https://10.1.1.1/' is not an http:// "
     "URL ending in '/'"),
    ('http_url = "http://10.1.1.1/boot"', "cluster.http_url: 'http://10.1.1.1/boot' is not"),
    ('http_url = "http://10.1.1.1/a,b/"', "cluster.http_url: 'http://10.1.1.1/a,b/' is not"),
    ('http_url = "http://10.1.1.1/\\"x/"', "cluster.http_url: 'http://10.1.1.1/\"x/' is not"),
])
def test_bad_boot_servers_and_http_url(tmp_path: Path, lines: str, problem: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_inventory(write(tmp_path, CLUSTER + lines + "\n"))
    assert len(info.value.problems) == 1 and "\n" not in info.value.problems[0]
    assert info.value.problems[0].startswith(f"{tmp_path / 'cluster.toml'}: {problem}")


def test_a_host_may_not_take_a_boot_servers_address(tmp_path: Path) -> None:
    path = write(tmp_path, CLUSTER + 'boot_servers = ["10.1.1.1", "10.1.1.2"]\n' + """
[[host]]
name = "server1"
mac = "52:54:00:12:34:56"
ip = "10.1.1.2"
second_ip = "172.16.1.5"
""")
    with pytest.raises(RecipeError, match=r"host\[0\]\.ip: 10\.1\.1\.2 is the cluster's own"):
        load_inventory(path)


def test_control_characters_are_one_problem_per_key(tmp_path: Path) -> None:
    """A group's append line becomes a pxelinux APPEND line: a newline would add lines."""
    path = write(tmp_path, CLUSTER.replace('"/srv/gameserver"', '"/srv/game\\tserver"') + """
[group.evil]
append = "base\\nLABEL evil\\n KERNEL http://evil/x"

[group."ca\\rnary"]
append = "base"

[[host]]
name = "server1\\r"
mac = "52:54:00:12:34:56"
ip = "10.1.1.5"
second_ip = "172.16.1.5"
""")
    with pytest.raises(RecipeError) as info:
        load_inventory(path)
    found = [line.split(": ", 1)[1] for line in info.value.problems]
    assert [line.split(": ")[0] for line in found] == [
        "cluster.nfs_export", "group.evil.append", 'group."ca\\rnary"', "host[0].name"], found
    assert found[1] == ("group.evil.append: a newline (U+000A) at character 5; control "
                        "characters are refused (in a boot config or a kernel line they would "
                        "break the line)")
    assert all("\r" not in line and "\n" not in line for line in info.value.problems)


def test_an_inventory_made_in_code_obeys_the_same_rules() -> None:
    inventory = load_inventory(ROOT / "examples/cluster.toml")
    evil = Group("canary", None, "base\nLABEL evil")
    with pytest.raises(RecipeError, match=r"^\S+/examples/cluster\.toml: group\.canary\.append: "
                       r"a newline \(U\+000A\) at character 5; "):
        dataclasses.replace(inventory, groups={"canary": evil})


def test_host_names_whose_log_files_collide_are_refused(tmp_path: Path) -> None:
    """`web` and `web-err` would share `web-err.log` on the log host (web's errors, and all
    web-err sends): one line names the inventory and both hosts, in either order."""
    example = (Path(__file__).resolve().parent.parent / "examples/cluster.toml").read_text()
    for first, second in (("web", "web-err"), ("web-err", "web")):
        text = example.replace('"server1"', f'"{first}"').replace('"server2"', f'"{second}"')
        path = write(tmp_path, text)
        with pytest.raises(RecipeError) as caught:
            load_inventory(path)
        assert str(caught.value) == (
            f"{path}: host[1].name: '{second}' and host[0] '{first}' would share the log "
            "host's file web-err.log; rename one")
    text = example.replace('"server1"', '"web"').replace('"server2"', '"web-errors"')
    assert [h.name for h in load_inventory(write(tmp_path, text)).hosts] == ["web", "web-errors"]


def test_a_cluster_or_host_made_in_code_obeys_the_same_rules() -> None:
    """`dataclasses.replace` with a hostile value raises, so no generated config can hold it."""
    inventory = load_inventory(ROOT / "examples/cluster.toml")
    cluster, host = inventory.cluster, inventory.hosts[0]
    for change, line in [
        ({"tftp_root": '/srv/tftp"; touch /tmp/pwned; "'},
         "cluster.tftp_root: '/srv/tftp\"; touch /tmp/pwned; \"' is not an absolute path"),
        ({"domain": 'example.com"; }\nhost evil { hardware ethernet 52:54:00:0:0:1; } #'},
         "cluster.domain: 'example.com\"; }\nhost evil"),
        ({"log_dir": "/var/log/%msg%"}, "cluster.log_dir: '/var/log/%msg%' is not an absolute"),
        ({"nfs_export_options": "rw,no_root_squash *(rw)"},
         "cluster.nfs_export_options: 'rw,no_root_squash *(rw)' is not an exports option"),
        ({"game_log_tag": "a b"}, "cluster.game_log_tag: 'a b' is not a syslog tag"),
        ({"http_url": 'http://x/",evil'}, "cluster.http_url: 'http://x/\",evil' is not an http"),
        ({"http_url": "http://x:0/"}, "cluster.http_url: 'http://x:0/': 0 is not a port number"),
        ({"http_url": "http://10.1.1.300/"},
         "cluster.http_url: 'http://10.1.1.300/': '10.1.1.300' is neither an IPv4 address"),
        ({"syslog_port": 0}, "cluster.syslog_port: 0 is not a port number"),
        ({"boot_server": "10.1.1.1; evil"}, "cluster.boot_server: '10.1.1.1; evil' is not an "
                                            "IPv4 address"),
        ({"boot_servers": (IPv4Address("10.1.1.9"),)},
         "cluster.boot_servers: expected 1 or 2 distinct addresses, boot_server 10.1.1.1 first"),
        ({"internal_router": IPv4Address("10.9.9.9")},
         "cluster.internal_router: 10.9.9.9 is outside the internal subnet 10.1.1.0/24"),
    ]:
        with pytest.raises(RecipeError) as info:
            dataclasses.replace(cluster, **change)  # type: ignore[arg-type]
        assert info.value.problems[0].startswith(line), (change, info.value.problems)
    for change, line in [
        ({"name": "server1 }"}, "host.name: 'server1 }' is not a valid host name"),
        ({"mac": "52:54:00:12:34:56; }"}, "host.mac: '52:54:00:12:34:56; }' is not a MAC"),
        ({"mac": "52-54-00-12-34-56"}, "host.mac: '52-54-00-12-34-56' is not written as "
                                       "52:54:00:12:34:56"),
        ({"ip": "10.1.1.5;"}, "host.ip: '10.1.1.5;' is not an IPv4 address"),
        ({"group": ["canary"]}, "host.group: expected a string, got an array"),
    ]:
        with pytest.raises(RecipeError) as info:
            dataclasses.replace(host, **change)  # type: ignore[arg-type]
        assert len(info.value.problems) == 1, info.value.problems
        assert info.value.problems[0].startswith(line), (change, info.value.problems)
    where = f"{ROOT / 'examples/cluster.toml'}: "
    second = inventory.hosts[1]
    for hosts, line in [
        ((host, dataclasses.replace(second, ip=host.ip)),
         "host[1].ip: 10.1.1.5 is also used by host[0]"),
        ((dataclasses.replace(host, ip=IPv4Address("10.2.0.5")),),
         "host[0].ip: 10.2.0.5 is outside the internal subnet 10.1.1.0/24"),
        ((dataclasses.replace(host, group="nope"),), "host[0].group: no group 'nope' "),
        ((dataclasses.replace(host, name="a" * 63),), f"host[0].name: '{'a' * 63}.example.com' "
                                                      "has 75 characters"),
    ]:
        with pytest.raises(RecipeError) as info:
            dataclasses.replace(inventory, hosts=hosts)
        assert info.value.problems[0].startswith(where + line), info.value.problems
    with pytest.raises(RecipeError, match=r"group\.canary\.append: '&&' would chain a command"):
        dataclasses.replace(inventory, groups={"canary": Group("canary", None, "x && shell")})
    assert dataclasses.replace(cluster, tftp_root="/srv/tftp").tftp_root == "/srv/tftp"
