"""imm, the Inactive Mailbox Manager for Exchange Online."""

__version__ = "0.1.0"
