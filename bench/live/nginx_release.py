"""nginx (Debian's nginx-light) as the releases of `bench/live.py`.

`python nginx_release.py DIRECTORY VERSION PORT` writes an nginx config for release VERSION listening on
127.0.0.1:PORT under DIRECTORY/VERSION-PORT/ and replaces itself with nginx (exec: fm's SIGTERM reaches
nginx's master, which stops its worker). Every release serves the same static page at `/` and answers
`/healthz` with 200; the version's name says what else it does:

* `plus40ms…`: each request of `/` waits 40 ms (the `echo_sleep` of the echo module that Debian's
  nginx-light loads as a dynamic module, a timer that blocks no worker), then is served as the others;
* `errors5pct…`: `split_clients` on the request's random `$request_id` answers 500 for a 5% slice;
* anything else: the plain config, so two such versions are identical releases.

The health path is never slowed down or failed: the instance looks healthy, only its traffic shows the fault.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

NGINX = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) or "nginx"
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
PAGE = "<!doctype html><title>release</title><p>" + "The same static page in every release. " * 20 + "\n"

CONFIG = """\
{load_module}worker_processes 1;
error_log stderr warn;
pid {home}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {home}/client_body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    default_type text/html;
    keepalive_requests 100000;
{http_extra}    server {{
        listen 127.0.0.1:{port};
        root {home}/www;
        location = /healthz {{ return 200 "ok\\n"; }}
{locations}    }}
}}
"""

PLAIN = "        location / {{ try_files /index.html =404; }}\n"

FAILING_HTTP = """\
    split_clients "${request_id}" $injected_failure {
        5%  1;
        *   0;
    }
"""
FAILING = """\
        location / {
            if ($injected_failure) { return 500; }
            try_files /index.html =404;
        }
"""

DELAYED = """\
        location / {
            echo_sleep 0.040;
            echo_exec @page;
        }
        location @page { try_files /index.html =404; }
"""


def render(home: Path, version: str, port: int) -> str:
    """The nginx.conf of release `version` on `port`, with its runtime files under `home`."""
    load_module, http_extra, locations = "", "", PLAIN.format()
    if version.startswith("plus40ms"):
        load_module, locations = f"load_module {ECHO_MODULE};\n", DELAYED
    elif version.startswith("errors5pct"):
        http_extra, locations = FAILING_HTTP, FAILING
    return CONFIG.format(
        load_module=load_module, home=home, port=port, http_extra=http_extra, locations=locations
    )


def main() -> None:
    directory, version, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    home = (directory / f"{version}-{port}").resolve()
    (home / "www").mkdir(parents=True, exist_ok=True)
    (home / "www" / "index.html").write_text(PAGE)
    for path in (home, home / "www", home / "www" / "index.html"):
        path.chmod(0o755)  # started as root, nginx's worker runs as an unprivileged user and reads these
    config = home / "nginx.conf"
    config.write_text(render(home, version, port))
    os.execv(NGINX, [NGINX, "-p", str(home), "-c", str(config), "-e", "stderr", "-g", "daemon off;"])


if __name__ == "__main__":
    main()
