"""The auth-watcher agent: keeps a Client Portal Gateway authenticated.

`GatewayClient` (in `ibeam_agents.keeper`) is the library entry point; it is
also importable from here, loaded on first use so that ``import ibeam_agents``
stays light.
"""

__version__ = "0.1.0"

__all__ = ["GatewayClient", "Credentials", "__version__"]


def __getattr__(name: str):
    if name == "GatewayClient":
        from ibeam_agents.keeper import GatewayClient

        return GatewayClient
    if name == "Credentials":
        from ibeam_agents.credentials import Credentials

        return Credentials
    raise AttributeError(f"module 'ibeam_agents' has no attribute {name!r}")
