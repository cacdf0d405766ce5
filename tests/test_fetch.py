"""The mirror client against a real HTTP server on loopback: verify, cache, retry, fail over."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcbuild import (
    ChecksumError,
    FetchError,
    FetchOptions,
    Policy,
    RecipeError,
    fetch,
    load_recipe,
    resolve,
)
from tcbuild.config.recipe import Recipe
from tcbuild.sources.cache import Absent, Cache

from .kit.mirrortree import MirrorServer, MirrorTree

ROOT = Path(__file__).resolve().parent.parent
FAST = Policy(attempts=3, backoff=0.01, connect_timeout=2, read_timeout=1)
X64 = "15.x/x86_64"
ORDER = ("dhcp.tcz", "libtirpc.tcz", "rpcbind.tcz", "filesystems-6.6.8-tinycore64.tcz",
         "nfs-utils.tcz", "openssl.tcz", "nrpe.tcz")


def make_recipe(tmp_path: Path, mirrors: list[str], install: list[str], flavor: str = "corepure64",
                local: bool = True) -> Recipe:
    """A recipe in tmp_path, with the example's local nrpe extension beside it."""
    shutil.copytree(ROOT / "recipes/extras", tmp_path / "extras", dirs_exist_ok=True)
    urls = ", ".join(f'"{m}"' for m in mirrors)
    names = ", ".join(f'"{n}"' for n in install)
    local_line = 'local = ["extras/nrpe.tcz"]' if local else ""
    path = tmp_path / "x.toml"
    path.write_text(f'[tinycore]\nrelease = "15.x"\nflavor = "{flavor}"\nmirrors = [{urls}]\n'
                    f"[extensions]\ninstall = [{names}]\n{local_line}\n")
    return load_recipe(path)


def options(tmp_path: Path, **kw: object) -> FetchOptions:
    return FetchOptions(cache_dir=tmp_path / "cache", policy=FAST, **kw)  # type: ignore[arg-type]


def cache_files(tmp_path: Path) -> set[str]:
    return {str(p.relative_to(tmp_path / "cache")) for p in (tmp_path / "cache").rglob("*")
            if p.is_file()}


def test_fetch_verifies_everything_then_runs_from_cache_with_no_request(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    recipe = make_recipe(tmp_path, [mirror.url], ["dhcp", "nfs-utils"])
    inputs = fetch(recipe, options(tmp_path))
    assert inputs.kernel_version == "6.6.8-tinycore64"
    assert inputs.resolution.order == ORDER
    assert [f.name for f in inputs.extensions] == list(ORDER)
    assert [f.name for f in (inputs.kernel, *inputs.core)] == ["vmlinuz64", "corepure64.gz"]
    for f in inputs.files:
        assert hashlib.sha256(f.path.read_bytes()).hexdigest() == f.sha256
        assert f.origin == ("local" if f.name == "nrpe.tcz" else mirror.url)
    kernel = mirror_tree.read(f"{X64}/release/distribution_files/vmlinuz64")
    assert inputs.kernel.path.read_bytes() == kernel
    assert mirror.count("nfs-utils.tcz.md5.txt") == 1 and mirror.count("dhcp.tcz.dep") == 1

    mirror.reset()
    again = fetch(recipe, options(tmp_path))
    assert mirror.requests == []
    assert again.resolution.order == ORDER and again.kernel_version == inputs.kernel_version
    assert {f.origin for f in again.files} == {"cache", "local"}
    assert [f.sha256 for f in again.files] == [f.sha256 for f in inputs.files]


@pytest.mark.parametrize(
    ("flavor", "parts", "filesystems"),
    [
        ("corepure64", ["vmlinuz64", "corepure64.gz"], "filesystems-6.6.8-tinycore64.tcz"),
        ("core", ["vmlinuz", "core.gz"], "filesystems-6.6.8-tinycore.tcz"),
        ("core64", ["vmlinuz64", "rootfs.gz", "modules64.gz"], "filesystems-6.6.8-tinycore64.tcz"),
    ],
)
def test_kernel_substitution_reads_the_chosen_core(
    tmp_path: Path, mirror: MirrorServer, flavor: str, parts: list[str], filesystems: str
) -> None:
    recipe = make_recipe(tmp_path, [mirror.url], ["nfs-utils"], flavor=flavor, local=False)
    inputs = fetch(recipe, options(tmp_path))
    assert [f.name for f in (inputs.kernel, *inputs.core)] == parts
    assert filesystems in inputs.resolution.order
    build = "x86_64" if flavor == "corepure64" else "x86"
    assert mirror.count(f"15.x/{build}/tcz/{filesystems}") == 3  # .md5.txt, .dep, .tcz


def test_resolve_fetches_the_core_only_when_kernel_is_named(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    resolution = resolve(make_recipe(tmp_path, [mirror.url], ["rpcbind"]), options(tmp_path))
    assert resolution.order == ("libtirpc.tcz", "rpcbind.tcz", "openssl.tcz", "nrpe.tcz")
    assert mirror.count("distribution_files") == 0 and mirror.count(".tcz") == mirror.count(
        ".tcz.")  # only .dep and .md5.txt, no extension body


def test_cycle_is_a_warning(
    tmp_path: Path, mirror: MirrorServer, caplog: pytest.LogCaptureFixture
) -> None:
    resolution = resolve(make_recipe(tmp_path, [mirror.url], ["cyc-a"], local=False),
                         options(tmp_path))
    assert resolution.order == ("cyc-b.tcz", "cyc-a.tcz")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("tcbuild", "WARNING", "dependency cycle: cyc-a.tcz -> cyc-b.tcz -> cyc-a.tcz")]


def test_missing_dependency_names_the_chain(tmp_path: Path, mirror: MirrorServer) -> None:
    mirror.fail(f"{X64}/tcz/libtirpc.tcz.md5.txt", "status", code=404)
    recipe = make_recipe(tmp_path, [mirror.url], ["dhcp", "nfs-utils"], local=False)
    with pytest.raises(FetchError) as info:
        fetch(recipe, options(tmp_path))
    assert str(info.value) == (
        "x.toml -> nfs-utils -> rpcbind -> libtirpc.tcz: not found on any mirror")
    assert info.value.exit_code == 1
    with pytest.raises(FetchError, match=r"^x\.toml -> broken-chain -> ghost\.tcz: not found"):
        resolve(make_recipe(tmp_path, [mirror.url], ["broken-chain"]), options(tmp_path))


def test_unknown_extension_is_a_recipe_error_with_a_suggestion(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    recipe = make_recipe(tmp_path, [mirror.url], ["dhcp", "nfs-utilz", "zzzzzz"])
    with pytest.raises(RecipeError) as info:
        resolve(recipe, options(tmp_path))
    assert info.value.problems == [
        f"{recipe.path}: extensions.install[1]: 'nfs-utilz' is not on the mirror "
        "(did you mean 'nfs-utils'?)",
        f"{recipe.path}: extensions.install[2]: 'zzzzzz' is not on the mirror",
    ]
    assert info.value.exit_code == 2


def test_md5_mismatch_names_both_checksums_and_caches_nothing(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    path = f"{X64}/tcz/dhcp.tcz"
    mirror.fail(path, "corrupt")
    recipe = make_recipe(tmp_path, [mirror.url], ["dhcp"], local=False)
    with pytest.raises(ChecksumError) as info:
        fetch(recipe, options(tmp_path))
    expected = mirror_tree.md5s[path]
    message = str(info.value)
    assert message.startswith(f"dhcp.tcz: checksum mismatch: expected md5 {expected}, got ")
    actual = message.split("got ")[1].split()[0]
    assert len(actual) == 32 and actual != expected and mirror.url + path in message
    stored = cache_files(tmp_path)
    assert not any("dhcp.tcz.json" in f for f in stored)
    assert not any(f.startswith("tmp/") for f in stored)


@pytest.mark.parametrize("kind", ["truncate", "drop"])
def test_a_cut_connection_is_retried(tmp_path: Path, mirror: MirrorServer, kind: str) -> None:
    path = f"{X64}/release/distribution_files/corepure64.gz"
    mirror.fail(path, kind, times=1)
    inputs = fetch(make_recipe(tmp_path, [mirror.url], ["dhcp"], local=False), options(tmp_path))
    assert inputs.core[0].path.read_bytes() == (Path(mirror.root) / path).read_bytes()
    assert mirror.requests.count(path) == 2


def test_bytes_beyond_the_announced_length_are_not_taken(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    path = f"{X64}/release/distribution_files/vmlinuz64"
    mirror.fail(path, "oversize", extra=b"EXTRA BYTES")
    inputs = fetch(make_recipe(tmp_path, [mirror.url], ["dhcp"], local=False), options(tmp_path))
    assert inputs.kernel.path.read_bytes() == (Path(mirror.root) / path).read_bytes()


def test_truncated_body_everywhere_fails_and_caches_nothing(
    tmp_path: Path, mirror: MirrorServer
) -> None:
    path = f"{X64}/release/distribution_files/vmlinuz64"
    mirror.fail(path, "truncate")
    with pytest.raises(FetchError, match=r"^vmlinuz64: could not download: http://\S+/vmlinuz64: "
                       r"connection closed after \d+ of \d+ bytes$"):
        fetch(make_recipe(tmp_path, [mirror.url], ["dhcp"], local=False), options(tmp_path))
    assert mirror.requests.count(path) == FAST.attempts
    assert not any("vmlinuz64.json" in f for f in cache_files(tmp_path))


def test_stalled_server_times_out_and_is_retried(tmp_path: Path, mirror: MirrorServer) -> None:
    path = f"{X64}/tcz/nfs-utils.tcz"
    mirror.fail(path, "stall", times=1, seconds=5.0)
    inputs = fetch(make_recipe(tmp_path, [mirror.url], ["nfs-utils"], local=False),
                   options(tmp_path))
    assert "nfs-utils.tcz" in inputs.resolution.order and mirror.requests.count(path) == 2


def test_fails_over_to_the_next_mirror(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/"  # nothing listens there
    with MirrorServer(mirror_tree.root) as second:
        mirror.fail(f"{X64}/tcz/dhcp.tcz", "status", code=503)
        recipe = make_recipe(tmp_path, [dead, mirror.url, second.url], ["dhcp", "nfs-utils"])
        inputs = fetch(recipe, options(tmp_path))
    origins = {f.name: f.origin for f in inputs.files}
    assert origins["dhcp.tcz"] == second.url
    assert origins["nfs-utils.tcz"] == mirror.url and origins["vmlinuz64"] == mirror.url
    assert mirror.requests.count(f"{X64}/tcz/dhcp.tcz") == FAST.attempts


@contextlib.contextmanager
def unreachable(kind: str) -> Iterator[str]:
    """A mirror URL on loopback that cannot be reached: nothing listens on its port
    ("refused"), or a listener whose backlog is full drops every new connection ("timeout")."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        if kind == "refused":
            server.close()
            yield url
            return
        server.listen(0)
        with contextlib.ExitStack() as stack:
            for _ in range(3):  # fill the accept queue; none is ever accepted
                waiting = stack.enter_context(socket.socket())
                waiting.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    waiting.connect(server.getsockname())
            time.sleep(0.1)
            yield url


@pytest.mark.parametrize("kind", ["refused", "timeout"])
def test_an_unreachable_mirror_is_skipped_and_a_404_means_no_dependencies(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree, kind: str
) -> None:
    """`--mirror DEAD --mirror LIVE` and an extension without a `.dep` (dhcp): the dead mirror
    says nothing, the live one's 404 is "no dependencies" (kept as such), the files come from
    the live one."""
    dep = f"{X64}/tcz/dhcp.tcz.dep"
    policy = Policy(attempts=2, backoff=0.01, connect_timeout=0.3, read_timeout=1)
    with unreachable(kind) as dead:
        recipe = make_recipe(tmp_path, [dead, mirror.url], ["dhcp"], local=False)
        inputs = fetch(recipe, FetchOptions(cache_dir=tmp_path / "cache", policy=policy))
    assert inputs.resolution.graph["dhcp.tcz"] == ()
    assert {f.name: f.origin for f in inputs.files}["dhcp.tcz"] == mirror.url
    assert mirror.count(dep) == 1
    assert isinstance(Cache(tmp_path / "cache").lookup(dep), Absent)
    assert inputs.extensions[0].path.read_bytes() == mirror_tree.read(f"{X64}/tcz/dhcp.tcz")


@pytest.mark.parametrize("fault", [{"kind": "status", "code": 503}, {"kind": "truncate"}],
                         ids=["503", "truncated"])
def test_a_reachable_mirror_failing_is_no_answer_even_beside_a_dead_one(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree, fault: dict[str, object]
) -> None:
    """A dead mirror, one that fails on the `.dep` (5xx, cut-off body) and one that lacks it:
    the fetch fails naming all three, and nothing is cached for the `.dep`."""
    dep = f"{X64}/tcz/nfs-utils.tcz.dep"
    with unreachable("refused") as dead, MirrorServer(mirror_tree.root) as second:
        mirror.fail(dep, **fault)  # type: ignore[arg-type]
        second.fail(dep, "status", code=404)
        recipe = make_recipe(tmp_path, [dead, mirror.url, second.url], ["nfs-utils"],
                             local=False)
        with pytest.raises(FetchError) as info:
            resolve(recipe, options(tmp_path))
    assert str(info.value).startswith(
        f"nfs-utils.tcz.dep: could not download: {dead}{dep}: Connection refused; "
        f"{mirror.url}{dep}: ")
    assert str(info.value).endswith(f"; {second.url}{dep}: not found")
    assert Cache(tmp_path / "cache").lookup(dep) is None


def test_every_mirror_unreachable_is_a_failure_not_an_absence(tmp_path: Path) -> None:
    with unreachable("refused") as dead:
        recipe = make_recipe(tmp_path, [dead], ["dhcp"], local=False)
        with pytest.raises(FetchError, match=r"could not download: .*Connection refused$"):
            resolve(recipe, options(tmp_path))
    assert not (tmp_path / "cache").exists() or not cache_files(tmp_path)


def test_offline_names_exactly_what_is_missing(tmp_path: Path, mirror: MirrorServer) -> None:
    recipe = make_recipe(tmp_path, [mirror.url], ["dhcp", "nfs-utils"])
    with pytest.raises(FetchError) as info:
        fetch(recipe, options(tmp_path, offline=True))
    head, missing = str(info.value).rsplit(": ", 1)
    assert head == f"offline: 8 file(s) missing from the cache {tmp_path / 'cache'}"
    assert set(missing.split(", ")) == {
        f"{X64}/release/distribution_files/{n}" for n in ("vmlinuz64", "corepure64.gz")} | {
        f"{X64}/tcz/{n}{suffix}" for n in ("dhcp.tcz", "nfs-utils.tcz", "openssl.tcz")
        for suffix in ("", ".md5.txt")}
    resolve(recipe, options(tmp_path))  # now the graph is cached, but no extension body
    mirror.reset()
    with pytest.raises(FetchError) as info:
        fetch(recipe, options(tmp_path, offline=True))
    missing = str(info.value).rsplit(": ", 1)[1].split(", ")
    assert set(missing) == {f"{X64}/tcz/{n}" for n in ORDER if n != "nrpe.tcz"} | {
        f"{X64}/release/distribution_files/vmlinuz64"}  # the core was needed for KERNEL
    assert mirror.requests == []


def test_local_extension_checksum_is_verified(tmp_path: Path, mirror: MirrorServer) -> None:
    recipe = make_recipe(tmp_path, [mirror.url], [])
    (tmp_path / "extras/nrpe.tcz.md5.txt").write_text("0" * 32 + "  nrpe.tcz\n")
    with pytest.raises(ChecksumError, match=r"nrpe\.tcz: checksum mismatch: expected md5 0{32}"):
        fetch(recipe, options(tmp_path))


def test_two_fetches_share_one_cache(tmp_path: Path, mirror: MirrorServer) -> None:
    import concurrent.futures

    recipe = make_recipe(tmp_path, [mirror.url], ["dhcp", "nfs-utils"])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: fetch(recipe, options(tmp_path)), range(2)))
    assert [f.sha256 for f in results[0].files] == [f.sha256 for f in results[1].files]
    assert not any(f.startswith("tmp/") for f in cache_files(tmp_path))


def test_a_mismatch_on_one_mirror_is_fetched_from_the_next(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    with MirrorServer(mirror_tree.root) as second:
        mirror.fail(f"{X64}/tcz/dhcp.tcz", "corrupt")
        recipe = make_recipe(tmp_path, [mirror.url, second.url], ["dhcp"], local=False)
        inputs = fetch(recipe, options(tmp_path))
    dhcp = inputs.extensions[0]
    assert dhcp.origin == second.url
    assert dhcp.path.read_bytes() == mirror_tree.read(f"{X64}/tcz/dhcp.tcz")


def test_every_mirror_failing_names_each_failure(tmp_path: Path, mirror: MirrorServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    path = f"{X64}/release/distribution_files/vmlinuz64"
    mirror.fail(path, "status", code=500)
    recipe = make_recipe(tmp_path, [mirror.url, dead], [], local=False)
    with pytest.raises(FetchError) as info:
        fetch(recipe, options(tmp_path))
    assert str(info.value) == (
        f"vmlinuz64: could not download: {mirror.url}{path}: HTTP 500; "
        f"{dead}{path}: Connection refused"
    )
    assert mirror.requests.count(path) == FAST.attempts


def test_redirects_stay_on_the_mirror(tmp_path: Path, mirror: MirrorServer,
                                      mirror_tree: MirrorTree) -> None:
    path = f"{X64}/tcz/dhcp.tcz"
    with MirrorServer(mirror_tree.root) as elsewhere:
        mirror.fail(path, "redirect", times=1, location=f"/{path}")  # same host: followed
        inputs = fetch(make_recipe(tmp_path, [mirror.url], ["dhcp"], local=False),
                       options(tmp_path))
        assert inputs.extensions[0].path.read_bytes() == mirror_tree.read(path)
        mirror.fail(f"{X64}/release/distribution_files/vmlinuz64", "redirect",
                    location=elsewhere.url + f"{X64}/release/distribution_files/vmlinuz64")
        with pytest.raises(FetchError, match=r"^vmlinuz64: could not download: http://\S+: "
                           r"redirected to http://127\.0\.0\.1:\d+/\S+; another host or scheme "
                           "is not followed$"):
            fetch(make_recipe(tmp_path, [mirror.url], ["dhcp"], local=False),
                  options(tmp_path / "other"))
        assert elsewhere.requests == []


def test_refresh_notices_a_file_replaced_on_the_mirror(tmp_path: Path,
                                                        mirror_tree: MirrorTree) -> None:
    tree = tmp_path / "mirror"
    shutil.copytree(mirror_tree.root, tree)
    with MirrorServer(tree) as server:
        recipe = make_recipe(tmp_path, [server.url], ["dhcp"], local=False)
        first = fetch(recipe, options(tmp_path))
        tcz = tree / f"{X64}/tcz/dhcp.tcz"
        tcz.write_bytes(tcz.read_bytes() + b"\0" * 4096)  # a new build, same name
        (tree / f"{X64}/tcz/dhcp.tcz.md5.txt").write_text(
            f"{hashlib.md5(tcz.read_bytes()).hexdigest()}  dhcp.tcz\n")
        server.reset()
        cached = fetch(recipe, options(tmp_path))
        assert server.requests == [] and cached.extensions[0].sha256 == first.extensions[0].sha256
        fresh = fetch(recipe, options(tmp_path, refresh=True))
        dhcp = fresh.extensions[0]
        assert dhcp.origin == server.url and dhcp.path.read_bytes() == tcz.read_bytes()
        assert fresh.kernel.origin == "cache"  # unchanged: checked, not downloaded
        assert server.requests.count(f"{X64}/release/distribution_files/vmlinuz64") == 0
        assert server.requests.count(f"{X64}/release/distribution_files/vmlinuz64.md5.txt") == 1


@pytest.mark.parametrize("fault", [{"kind": "status", "code": 500}, {"kind": "truncate"},
                                   {"kind": "drop"}, {"kind": "stall", "seconds": 3.0}],
                         ids=["500", "truncated", "dropped", "timeout"])
def test_a_dep_is_absent_only_when_every_mirror_says_404(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree, fault: dict[str, object]
) -> None:
    """One mirror's 404 while another fails is no answer: the fetch fails, nothing is cached,
    and once the failing mirror answers the dependencies are found."""
    dep = f"{X64}/tcz/nfs-utils.tcz.dep"
    with MirrorServer(mirror_tree.root) as second:
        mirror.fail(dep, "status", code=404)  # out of date: it lacks the .dep
        second.fail(dep, **fault)  # type: ignore[arg-type]
        recipe = make_recipe(tmp_path, [mirror.url, second.url], ["nfs-utils"], local=False)
        with pytest.raises(FetchError) as info:
            resolve(recipe, options(tmp_path))
        assert str(info.value).startswith(
            f"nfs-utils.tcz.dep: could not download: {mirror.url}{dep}: not found; "
            f"{second.url}{dep}: ")
        assert Cache(tmp_path / "cache").lookup(dep) is None  # not recorded as "no .dep"
        second.clear_faults()
        resolution = resolve(recipe, options(tmp_path))
    assert resolution.graph["nfs-utils.tcz"] == (
        "rpcbind.tcz", "libtirpc.tcz", "filesystems-6.6.8-tinycore64.tcz")
    assert second.count("nfs-utils.tcz.dep") == FAST.attempts + 1


def test_a_dep_every_mirror_lacks_is_cached_as_absent(
    tmp_path: Path, mirror: MirrorServer, mirror_tree: MirrorTree
) -> None:
    dep = f"{X64}/tcz/dhcp.tcz.dep"
    with MirrorServer(mirror_tree.root) as second:
        recipe = make_recipe(tmp_path, [mirror.url, second.url], ["dhcp"], local=False)
        assert resolve(recipe, options(tmp_path)).graph["dhcp.tcz"] == ()
        assert (mirror.count(dep), second.count(dep)) == (1, 1)
        assert isinstance(Cache(tmp_path / "cache").lookup(dep), Absent)
        mirror.reset()
        resolve(recipe, options(tmp_path))
        assert mirror.requests == []
