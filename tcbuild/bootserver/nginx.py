"""nginx's site for HTTP boot: the TFTP root served at the inventory's `http_url`; pure text.

A `server { }` block to include from nginx's `http` context. It serves what iPXE fetches from
a published tree: `boot.ipxe`, the scripts in `ipxe/`, each release's kernel and initrd under
`tcbuild/releases/<id>/` (and the rest of the tree TFTP serves: bootloaders, pxelinux configs,
the site's own files). It refuses the tree's state, which TFTP clients never ask for: the
rest of `tcbuild/` (the publish lock, config histories, the bootloader record, a rollout's
record), every `release.json` and any other `.json` or `.lock` file, and hidden files (those
being written, a release being staged). A directory answers 403: no listing.

Every value in it was checked by the inventory (`config.values`: a plain URL, an IPv4 address
or DNS name, a port, a plain path), so nothing here can end a directive or open a block.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..config.inventory import Inventory
from ..config.values import is_ipv4
from .generated import header

SITE = "nginx-tcbuild.conf"

# The tree's layout (tftproot.state's; bootserver/ does not import tftproot/, a test ties them).
STATE_DIR = "tcbuild"  # every state file of the tree lives under it
RELEASES = f"{STATE_DIR}/releases"


def listen_lines(http_url: str) -> list[str]:
    """`listen` on the URL's address and port; a URL by name listens on the port for that name
    (on every address: nginx would resolve a name in `listen` once, at start)."""
    parts = urlsplit(http_url)
    host, port = str(parts.hostname), parts.port or 80
    if is_ipv4(host):
        return [f"listen {host}:{port};"]
    return [f"listen {port};", f"server_name {host};"]


def nginx_site(inventory: Inventory) -> str:
    """The site, for an inventory with `http_url` (nginx's own main config includes it)."""
    c = inventory.cluster
    assert c.http_url, "only an inventory with http_url has a site"
    prefix = urlsplit(c.http_url).path  # "/" or "/a/b/"
    root = c.tftp_root.rstrip("/") + "/"
    pattern = re.escape(prefix)  # its ._~+@- literally (PCRE takes \-, \~ as the character)
    outside = ["", "    # Outside the URL's path: nothing.",
               "    location / {", "        return 404;", "    }"] if prefix != "/" else []
    lines = [
        f"# The TFTP root {c.tftp_root}, served for iPXE's HTTP boot at",
        f"# {c.http_url}",
        "# Include it from nginx's http block: e.g. copy it to /etc/nginx/conf.d/tcbuild.conf.",
        "server {",
        *(f"    {line}" for line in listen_lines(c.http_url)),
        "    sendfile on;",
        "    tcp_nopush on;",
        "    autoindex off;",
        "    default_type application/octet-stream;",
        "",
        "    # The tree, file by file (a directory: 403, no listing).",
        f"    location {prefix} {{",
        f"        alias {root};",
        "    }",
        "",
        "    # State and files being written: the publish lock, release.json, histories,",
        "    # bootloader and rollout records, hidden files (checked before the releases below).",
        r"    location ~* (^|/)\.|\.(json|lock)$ {",
        "        return 404;",
        "    }",
        f"    location {prefix}{STATE_DIR}/ {{",
        "        return 404;",
        "    }",
        "",
        "    # What iPXE fetches from a release: its kernel and initrd.",
        f"    location ~ ^{pattern}({RELEASES}/[^/]+/[^/]+)$ {{",
        f"        alias {root}$1;",
        "    }",
        *outside,
        "}",
    ]
    return header(inventory) + "".join(f"{line}\n" for line in lines)
