"""Provenance of rendered files with a synthetic face: the signing identity, Content Credentials (C2PA) embedded
or in a sidecar, and the consent check that gates a render. No Qt, no node library: Write and the farm call it."""
from .consent import ConsentOverride, ConsentRefused, check_consent, consent_findings, make_override
from .credentials import (ManifestReading, ProvenanceError, current_identity, is_synthetic, read_credentials,
                          record_of, sign_file)
from .identity import (SigningError, SigningIdentity, config_dir, identity_from_files, load_identity,
                       local_test_identity,
                       trust_anchors)

__all__ = ["ConsentOverride", "ConsentRefused", "ManifestReading", "ProvenanceError", "SigningError",
           "SigningIdentity", "check_consent", "config_dir", "current_identity", "consent_findings", "identity_from_files",
           "is_synthetic", "load_identity", "make_override", "read_credentials", "record_of", "sign_file",
           "local_test_identity", "trust_anchors"]
