"""What IBKR's servers answer: the JSON bodies and the reply type of the routes.

Shapes follow shared/reference/gateway.md §3 (IBKR's docs and real logs);
where the reference marks a shape uncertain, docs/simulator.md says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .accounts import Account

MAC = "98:F2:B3:23:BF:A0"
HARDWARE_INFO = "3b0679ee|98:F2:B3:23:BF:A0"
SERVER_INFO = {
    "serverName": "JifN19053",
    "serverVersion": "Build 10.25.0p, Dec 5, 2023 5:48:12 PM",
}
INIT_FIRST = {"error": "Init session first", "statusCode": 400}
NO_SESSION_BODY = '{"error":"no session"}'


@dataclass
class Reply:
    """What a route answers: status, body (JSON object, text or bytes), type."""

    status: int
    body: Any = b""
    content_type: str | None = None

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()

    def media_type(self) -> str | None:
        if self.content_type is not None:
            return self.content_type
        if isinstance(self.body, (dict, list)):
            return "application/json;charset=utf-8"
        return None


def json_reply(body: Any, status: int = 200) -> Reply:
    return Reply(status, body, "application/json;charset=utf-8")


UNAUTHORIZED = Reply(401)


def features() -> dict[str, Any]:
    return {
        "env": "PROD",
        "wlms": True,
        "realtime": True,
        "bond": True,
        "optionChains": True,
        "calendar": True,
        "newMf": True,
    }


def iserver_accounts(account: Account, session_id: str) -> dict[str, Any]:
    account_id = account.account_id
    return {
        "accounts": [account_id],
        "acctProps": {
            account_id: {
                "hasChildAccounts": False,
                "supportsCashQty": True,
                "noFXConv": False,
                "isProp": False,
                "supportsFractions": True,
                "allowCustomerTime": False,
            }
        },
        "aliases": {account_id: account_id},
        "allowFeatures": {
            "showGFIS": True,
            "allowCrypto": False,
            "allowTypeAhead": True,
        },
        "chartPeriods": {"STK": ["*"]},
        "groups": [],
        "profiles": [],
        "selectedAccount": account_id,
        "serverInfo": dict(SERVER_INFO),
        "sessionId": session_id[:7] + "." + session_id[7:15],
        "isFT": False,
        "isPaper": account.paper,
    }


def portfolio_account(account: Account) -> dict[str, Any]:
    account_id = account.account_id
    return {
        "id": account_id,
        "accountId": account_id,
        "accountVan": account_id,
        "accountTitle": account.user,
        "displayName": account_id,
        "accountAlias": None,
        "accountStatus": 1678852800000,
        "currency": "USD",
        "type": "DEMO" if account.paper else "INDIVIDUAL",
        "tradingType": "STKNOPT",
        "businessType": "INDEPENDENT",
        "ibEntity": "IBLLC-US",
        "faclient": False,
        "clearingStatus": "O",
        "covestor": False,
        "noClientTrading": False,
        "trackVirtualFXPortfolio": False,
        "parent": {
            "mmc": [],
            "accountId": "",
            "isMParent": False,
            "isMChild": False,
            "isMultiplex": False,
        },
        "desc": account_id,
        "brokerageAccess": True,
    }
