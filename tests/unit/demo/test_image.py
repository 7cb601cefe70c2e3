"""The demo's Docker images: FROM scratch with a static busybox, a CGI script per version."""

from __future__ import annotations

import io
import tarfile

from fridaymorning.demo.image import build_context, cgi_script, dockerfile, find_busybox


def test_only_the_bad_version_fails_or_waits() -> None:
    """v3's script answers 500 for some requests and sleeps first; v1's and v2's never do."""
    assert "500" in cgi_script("v3") and "usleep" in cgi_script("v3")
    for good in ("v1", "v2", "v9"):
        script = cgi_script(good)
        assert "500" not in script and "usleep" not in script and f"X-Version: {good}" in script


def test_the_image_is_from_scratch_with_a_health_check_by_nc() -> None:
    """The Dockerfile starts FROM scratch and checks health with busybox nc (busybox wget crashes there)."""
    text = dockerfile("v1")
    assert text.startswith("FROM scratch")
    assert "HEALTHCHECK" in text and "busybox nc" in text and "wget" not in text


def test_the_context_holds_busybox_sh_and_the_web_root() -> None:
    """The build context carries the static busybox, sh linked to it, /healthz and the executable CGI."""
    busybox = find_busybox()
    with tarfile.open(fileobj=io.BytesIO(build_context("v3", busybox))) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert members["rootfs/bin/sh"].issym() and members["rootfs/bin/sh"].linkname == "busybox"
    assert members["rootfs/www/cgi-bin/index.cgi"].mode & 0o111
    assert {"Dockerfile", "rootfs/bin/busybox", "rootfs/www/healthz"} <= set(members)
