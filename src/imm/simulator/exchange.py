"""Simulated Exchange Online (STUB: the Exchange issue replaces this with the full REST InvokeCommand service).

Interface: ``ExchangeService(config, base_url, identity)``, ``register(router)``, ``profile_extras() -> dict``,
``close()`` (saves the state file), and ``tenant`` (the ground truth tests read and change).
"""

from __future__ import annotations

from typing import Any

from imm.simulator.server import Router


class ExchangeService:
    def __init__(self, config: Any, base_url: str, identity: Any) -> None:
        self.config = config
        self.base_url = base_url
        self.identity = identity
        self.tenant: Any = None

    def register(self, router: Router) -> None:
        return None

    def profile_extras(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None
