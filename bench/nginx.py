"""nginx's ``empty_gif``: the fastest pixel server on this machine, as a second reference.

What people deploy in front of a log shipper to serve a tracking pixel: no application code
at all. The edge is measured against it (no goal yet) to know the distance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

NGINX = "/usr/sbin/nginx"


def available() -> bool:
    return Path(NGINX).exists() or shutil.which("nginx") is not None


def command(port: int, workers: int, folder: Path) -> list[str]:
    """The nginx command serving the GIF on ``port`` with ``workers`` processes, in the
    foreground, every file under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(
        f"""worker_processes {workers};
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  server {{
    listen 127.0.0.1:{port} reuseport;
    location = /sales.php {{
      empty_gif;
      expires epoch;
      add_header Cache-Control "no-store, no-cache, must-revalidate, private";
      add_header Pragma no-cache;
    }}
    location = /healthz {{ return 200 "ok\\n"; }}
  }}
}}
""",
        encoding="utf-8",
    )
    binary = NGINX if Path(NGINX).exists() else (shutil.which("nginx") or "nginx")
    return [binary, "-c", str(config), "-p", str(folder), "-e", str(folder / "error.log")]
