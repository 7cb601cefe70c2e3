"""The demo service as Docker images, built locally without a registry: `FROM scratch` plus Debian's
static busybox (package `busybox-static`), which serves HTTP with `busybox httpd` and answers `/` with a
CGI script. An image is about 2 MB and builds in about a second.

- `GET /healthz` → 200 "ok" (a static file); the image's HEALTHCHECK asks for it with `busybox nc`
  (busybox `wget` crashes in such an image).
- `GET /` → the CGI script: 200 with `X-Version`, or, for the bad version v3, 500 for about 1 request in
  10 and 20 ms slower.

The images are tagged `fm-demo:<version>` and listen on CONTAINER_PORT.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterable
from typing import Any

IMAGE_REPOSITORY = "fm-demo"
CONTAINER_PORT = 8080
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
# The bad version's share of failed requests, in percent, and its extra latency in microseconds.
BAD_VERSIONS = {"v3": (10, 20_000)}
IMAGE_LABEL = "fridaymorning.demo"


def image_name(version: str) -> str:
    """The demo image of `version`: 'fm-demo:v2'."""
    return f"{IMAGE_REPOSITORY}:{version}"


def find_busybox() -> str:
    """The path of a statically linked busybox; FileNotFoundError with the install advice when none is."""
    for path in (*BUSYBOX_PATHS, shutil.which("busybox") or ""):
        if path and os.path.isfile(path) and _is_static(path):
            return path
    raise FileNotFoundError("no statically linked busybox for the demo image: apt-get install busybox-static")


def _is_static(path: str) -> bool:
    """True when the ELF file at `path` has no program interpreter (PT_INTERP), i.e. it is static."""
    with open(path, "rb") as file:
        header = file.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        phoff = int.from_bytes(header[32:40], "little")
        phentsize = int.from_bytes(header[54:56], "little")
        phnum = int.from_bytes(header[56:58], "little")
        file.seek(phoff)
        table = file.read(phentsize * phnum)
    types = (int.from_bytes(table[i : i + 4], "little") for i in range(0, len(table), phentsize))
    return 3 not in types  # PT_INTERP


def cgi_script(version: str) -> str:
    """The script that answers `/`: busybox ash; its $RANDOM picks which requests of a bad version fail."""
    lines = ["#!/bin/busybox sh"]
    failing = BAD_VERSIONS.get(version)
    if failing is not None:
        percent, delay_us = failing
        lines += [
            f"/bin/busybox usleep {delay_us}",
            f"if [ $((RANDOM % 100)) -lt {percent} ]; then",
            "  printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n"
            f"X-Version: {version}\\r\\n\\r\\nfailed\\n'",
            "  exit 0",
            "fi",
        ]
    lines.append(f"printf 'Content-Type: text/plain\\r\\nX-Version: {version}\\r\\n\\r\\n{version}\\n'")
    return "\n".join(lines) + "\n"


def dockerfile(version: str) -> str:
    health = (
        "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc 127.0.0.1 "
        f"{CONTAINER_PORT} | /bin/busybox grep -q '200 OK'"
    )
    return "\n".join(
        [
            "FROM scratch",
            "COPY rootfs/ /",
            f'LABEL {IMAGE_LABEL}="{version}"',
            f"EXPOSE {CONTAINER_PORT}",
            # Lenient: Swarm replaces a task whose check fails, and on a busy machine a check that
            # forks three processes can take seconds without anything being wrong.
            "HEALTHCHECK --interval=2s --timeout=10s --start-period=30s --retries=5 "
            f'CMD ["/bin/busybox", "sh", "-c", "{health}"]',
            f'ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "{CONTAINER_PORT}", "-h", "/www"]',
            "",
        ]
    )


def build_context(version: str, busybox: str) -> bytes:
    """The build context as an in-memory tar: the Dockerfile and rootfs/ (busybox, sh, the web root)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_file(tar, "Dockerfile", dockerfile(version).encode(), 0o644)
        tar.add(busybox, arcname="rootfs/bin/busybox")
        link = tarfile.TarInfo("rootfs/bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        _add_file(tar, "rootfs/www/healthz", b"ok\n", 0o644)
        _add_file(tar, "rootfs/www/cgi-bin/index.cgi", cgi_script(version).encode(), 0o755)
    return buffer.getvalue()


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def build_images(client: Any, versions: Iterable[str]) -> list[str]:
    """Build the demo image of each version with the docker SDK `client`; return their names."""
    busybox = find_busybox()
    names = []
    for version in versions:
        context = io.BytesIO(build_context(version, busybox))
        client.images.build(fileobj=context, custom_context=True, tag=image_name(version), rm=True)
        names.append(image_name(version))
    return names


def build_images_at(platform_url: str, versions: Iterable[str]) -> list[str]:
    """Build the demo images on the Docker host of a swarm:// platform URL (see platform/swarm.py)."""
    import docker

    transport = platform_url.split("://", 1)[0].removeprefix("swarm").removeprefix("+")
    if not transport:
        client = docker.from_env(version="auto")
    else:
        rest = platform_url.split("://", 1)[1]
        client = docker.DockerClient(base_url=f"{transport}://{rest}", version="auto")
    try:
        return build_images(client, versions)
    finally:
        client.close()
