"""Sign-in to Entra ID over msal: device code (delegated) or certificate (app-only), with a persisted token cache.

``Authenticator`` (``imm.auth.authenticator``) and ``AuthenticationError`` (``imm.auth.errors``); importing this
package does not import msal (it is loaded on first use).
"""

from imm.auth.authenticator import COMPLIANCE_SCOPES, EXCHANGE_SCOPES, Authenticator
from imm.auth.errors import AuthenticationError

__all__ = ["COMPLIANCE_SCOPES", "EXCHANGE_SCOPES", "AuthenticationError", "Authenticator"]
