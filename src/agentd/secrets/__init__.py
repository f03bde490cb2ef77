"""Named secrets the model never sees: sealed at rest, scoped to a tenant or an agent,
resolved only where a setting uses one (``secret:NAME``), redacted out of everything a
run writes.

=================  ===========================================================
``service``        set, list, delete, resolve (:class:`Secrets`)
``redact``         a secret's value and its encoded forms replaced in text and
                   event data (:class:`SecretRedactor`)
``_cipher``        the key (a file or ``AGENTD_SECRETS_KEY``), AES-256-GCM
=================  ===========================================================

The store side is :mod:`agentd.store.secrets`; docs/security.md ("Secrets") is the
user's guide.
"""

from agentd.secrets._cipher import KEY_ENV
from agentd.secrets.service import (
    MAX_VALUE,
    MIN_VALUE,
    NAME_PATTERN,
    REF_PREFIX,
    RunSecrets,
    SecretInfo,
    Secrets,
    check_name,
    reference,
)

__all__ = ["KEY_ENV", "MAX_VALUE", "MIN_VALUE", "NAME_PATTERN", "REF_PREFIX", "RunSecrets",
           "SecretInfo", "Secrets", "check_name", "reference"]
