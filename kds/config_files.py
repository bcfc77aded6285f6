"""The files both daemons' options name, checked as a start would use them.

Run by ``globalcp``/``zonecp run`` before the store is opened, and by ``check-config``, which
the systemd units run before a reload: a key that does not match its certificate, or an
encryption key file that does not load, is refused before anything is written.
"""

from __future__ import annotations

from typing import Any

from kds import tls
from kds.api.auth import check_api_token_files
from kds.crypto import load_key_file

__all__ = ["check_files_given"]


def check_files_given(cfg: Any) -> None:
    """Refuse the API's certificate and key given alone, unreadable or not a pair, an
    encryption key file that does not load, and an API token file a start would refuse
    (``cfg``: a GlobalConfig or ZoneConfig)."""
    tls.check_files(
        cfg.api_tls_cert_file, cfg.api_tls_key_file, "--api-tls-cert-file", "--api-tls-key-file"
    )
    if cfg.encryption_key_file is not None:
        load_key_file(cfg.encryption_key_file)
    check_api_token_files(cfg.data_dir, cfg.admin_token_file, cfg.read_only_token_file)
