"""One certificate authority per state directory; every HTTPS endpoint of the stand-in chains to it.

The CA is kept in the state directory so that a restarted stand-in serves certificates that clients which
already trust ``ca.pem`` keep trusting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA bundle clients trust and the server certificate every endpoint presents."""

    ca: Path
    cert: Path
    key: Path


def ensure_tls(state_dir: Path) -> TlsFiles:
    """Create (or reuse) the CA and a server certificate for 127.0.0.1 and localhost in ``state_dir``."""
    ca_path, ca_key_path = state_dir / "ca.pem", state_dir / "ca-key.pem"
    cert_path, key_path = state_dir / "server.pem", state_dir / "server.key"
    if ca_path.exists() and ca_key_path.exists():
        ca = trustme.CA.from_pem(ca_path.read_bytes(), ca_key_path.read_bytes())
    else:
        ca = trustme.CA(organization_name="acr-transfer local Azure stand-in")
        ca.cert_pem.write_to_path(str(ca_path))
        ca.private_key_pem.write_to_path(str(ca_key_path))
        ca_key_path.chmod(0o600)
    if not (cert_path.exists() and key_path.exists()):
        leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
        # the full chain, so clients that only trust the CA can verify it
        cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
    return TlsFiles(ca=ca_path, cert=cert_path, key=key_path)
