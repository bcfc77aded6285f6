"""Global's start-up security provisioning: the sync server's TLS certificate.

Given ``--tls-cert-file`` and ``--tls-key-file``, global serves those (reloaded when the
files change). Otherwise it provisions its own:

- a CA, made once: its private key is the internal secret ``sync-ca-key`` (never synced,
  never served), its certificate the internal secret ``sync-ca-cert`` and the file
  ``DATA_DIR/ca.crt`` that zones are given with ``--ca-file``;
- a server certificate signed by that CA for ``--tls-names`` (default: this host's name,
  localhost and its addresses), in ``DATA_DIR/tls/``, reissued at start when it expires within
  30 days, the names changed, or the two files do not form a pair (a start cut off
  between writing them).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from kds import tls
from kds.clock import rfc3339
from kds.config import GlobalConfig
from kds.config_files import check_files_given
from kds.errors import ConfigError
from kds.secret_files import write_secret_file
from kds.store import GlobalStore

__all__ = ["CA_CERT", "CA_KEY", "check_options", "server_credentials"]

log = structlog.get_logger("globalcp.security")

CA_KEY = "sync-ca-key"
CA_CERT = "sync-ca-cert"


async def _own_ca(store: GlobalStore, data_dir: Path) -> tls.CertPair:
    found = await store.internal_secrets("sync-ca-")
    if CA_KEY in found and CA_CERT in found:
        ca = tls.CertPair(found[CA_CERT], found[CA_KEY])
    else:
        # Made once: key and certificate are stored together unless either is there, so
        # global instances starting at once on one empty store all take the first one made.
        made = tls.make_ca("kds-sync global sync CA")
        stored = await store.add_internal_secrets(
            {CA_KEY: made.key_pem, CA_CERT: made.cert_pem}, rfc3339()
        )
        if CA_KEY not in stored or CA_CERT not in stored:
            raise ConfigError(
                f"the store holds only one of the internal secrets {CA_KEY} and {CA_CERT}: "
                "restore the store from a backup"
            )
        ca = tls.CertPair(stored[CA_CERT], stored[CA_KEY])
        if ca.key_pem == made.key_pem:
            log.info("created the sync CA", ca_file=str(data_dir / "ca.crt"))
    ca_file = data_dir / "ca.crt"
    if not ca_file.exists() or ca_file.read_bytes() != ca.cert_pem:
        write_secret_file(ca_file, ca.cert_pem)
    return ca


def check_options(cfg: GlobalConfig) -> None:
    """What global's start refuses of its options beyond each one's own rule (globalcp run
    and check-config), before it opens the store: certificate files given alone, unreadable,
    not PEM or not a pair, and an encryption key file that does not load."""
    check_files_given(cfg)
    if not cfg.kds_insecure:  # plaintext sync serves no certificate
        tls.check_files(cfg.tls_cert_file, cfg.tls_key_file, "--tls-cert-file", "--tls-key-file")


def _needs_issuing(cert_file: Path, key_file: Path, names: list[str]) -> bool:
    """Whether the server certificate in ``tls/`` must be issued (again): missing, expiring,
    for other names, or not a pair with its key. The key and the certificate are two files
    renamed into place one after the other; a crash between the two (a reissue for new
    names) left a new key beside the old certificate, and the start was refused for it."""
    if not cert_file.exists():
        return True
    try:
        cert = cert_file.read_bytes()
        tls.check_pair(cert, key_file.read_bytes(), str(cert_file.parent))
    except (OSError, ConfigError) as e:
        log.warning("the sync server certificate cannot be used: issuing it again", error=str(e))
        return True
    return tls.needs_reissue(cert, names)


async def server_credentials(
    cfg: GlobalConfig, store: GlobalStore, data_dir: Path
) -> tls.ReloadingServerCredentials:
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        raise ConfigError("--tls-cert-file and --tls-key-file go together: give both or neither")
    if cfg.tls_cert_file and cfg.tls_key_file:
        return tls.ReloadingServerCredentials(cfg.tls_cert_file, cfg.tls_key_file)
    ca = await _own_ca(store, data_dir)
    names = list(cfg.tls_names) or tls.default_names(cfg.kds_address[0])
    tls_dir = data_dir / "tls"
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    cert_file, key_file = tls_dir / "server.crt", tls_dir / "server.key"
    if _needs_issuing(cert_file, key_file, names):
        pair = tls.issue_server_cert(ca, names)
        write_secret_file(key_file, pair.key_pem)
        write_secret_file(cert_file, pair.cert_pem)
        log.info("issued the sync server certificate", names=names)
    return tls.ReloadingServerCredentials(cert_file, key_file)
