"""Container health check: ``python3 -m kds.healthcheck [URL]``; exit 0 when the daemon is ready.

The image's HEALTHCHECK runs it. It asks ``GET /readyz`` (open, no token; it carries no data)
on the URL given, else on ``KDS_HEALTHCHECK_URL``, else on the loopback side of the API address
in ``GLOBALCP_API_ADDRESS`` and ``ZONECP_API_ADDRESS`` (whichever daemon the container runs
answers; the other port is closed), over https when ``*_API_TLS_CERT_FILE`` is set. A global
is ready once its store is open; a zone once it has caught up with global after starting (and
stays ready while global is away).

Standard library only, so a check every few seconds costs a short-lived process and no more.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

__all__ = ["candidate_urls", "main"]


def _loopback_url(address: str, scheme: str = "http") -> str:
    host, _, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: loopback is among them
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/readyz"


def candidate_urls(argv: list[str], env: dict[str, str]) -> list[str]:
    if argv:
        return argv
    if env.get("KDS_HEALTHCHECK_URL"):
        return [env["KDS_HEALTHCHECK_URL"]]
    return [
        _loopback_url(
            env[f"{daemon}_API_ADDRESS"],
            "https" if env.get(f"{daemon}_API_TLS_CERT_FILE") else "http",
        )
        for daemon in ("GLOBALCP", "ZONECP")
        if env.get(f"{daemon}_API_ADDRESS")
    ]


def main(argv: list[str] | None = None) -> int:
    urls = candidate_urls(sys.argv[1:] if argv is None else argv, dict(os.environ))
    if not urls:
        print(
            "no URL to check: pass one, or set KDS_HEALTHCHECK_URL, GLOBALCP_API_ADDRESS "
            "or ZONECP_API_ADDRESS",
            file=sys.stderr,
        )
        return 2
    answers = []
    # /readyz carries no data and the check stays on loopback: an https API's certificate
    # (often for other names) is not verified here.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=3, context=unverified) as r:
                answers.append(f"{url}: {r.status}")
                if r.status == 200:
                    print(answers[-1])
                    return 0
        except urllib.error.HTTPError as e:  # 503: up but not ready yet
            answers.append(f"{url}: {e.code} {e.read(500).decode(errors='replace').strip()}")
        except (OSError, ValueError) as e:
            answers.append(f"{url}: {getattr(e, 'reason', e)}")
    print("not ready: " + "; ".join(answers), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
