"""Errors raised by the agent.

Every error the agent raises on purpose descends from ``AgentError``.  Callers catch
by what they will do next: fix the configuration and stop, retry later, log in
again, or stop for good.  Foreign errors (requests, Selenium, XML-RPC, OSError) are
wrapped at the boundary where they happen, with the cause chained by ``from``.

    AgentError
    ├── ConfigError                  bad setting or input file: exit 2, nothing started
    │   └── MissingCredentialError   a credential is absent and no terminal to ask on
    ├── GatewayError                 talking to the gateway failed
    │   ├── GatewayNotRunning        connection refused / no process
    │   ├── GatewayUnreachable       the request timed out or hung (upstream down)
    │   ├── GatewayAccessDenied      404 "Access Denied": ips.allow, a config error
    │   ├── GatewayTransientError    5xx from upstream (IBKR restart or maintenance)
    │   ├── GatewayRateLimited       429: back off
    │   └── GatewayProtocolError     an answer we cannot read
    ├── ProcessControlError          starting/stopping the gateway or the display failed
    │   ├── PortInUse                another process holds the gateway's port
    │   └── SupervisorError          supervisord's XML-RPC interface refused or failed
    ├── BrowserUnavailable           no browser, driver mismatch, no display
    └── LoginError                   one login attempt through the page failed
        ├── BudgetedLoginError       failures that spend the failure budget
        │   ├── CredentialsRejected  the page said the user name or password is wrong
        │   ├── SecondFactorFailed   the code was refused or the push timed out
        │   └── NeverAuthenticated   "Client login succeeds", but no brokerage session
        ├── AccountLocked            the page says the account is locked: fatal
        ├── WrongTradingMode         Live/Paper mismatch that the agent could not fix
        ├── SecondFactorUnavailable  a second factor is asked and no source can answer
        ├── PageNotRecognised        the page matches nothing we know (drift)
        └── LoginTimeout             the page stopped moving (network, slow upstream)

``FailureBudgetExhausted`` is raised by the failure budget itself; it is a
``AgentError`` of its own because it stops logins until an operator acts.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""

    #: exit status the CLI uses when this error ends the program
    exit_code = 1


class ConfigError(AgentError):
    """A setting or input file is invalid; the message names it and the fix."""

    exit_code = 2


class MissingCredentialError(ConfigError):
    """A credential is not set and there is no terminal to prompt on."""


class GatewayError(AgentError):
    """A request to the gateway did not give a usable answer."""


class GatewayNotRunning(GatewayError):
    """Nothing answers on the gateway port."""


class GatewayUnreachable(GatewayError):
    """The gateway accepted the connection but did not answer in time."""


class GatewayAccessDenied(GatewayError):
    """The gateway's IP filter refused us: a configuration error, never an auth one."""


class GatewayTransientError(GatewayError):
    """A 5xx answer: usually an IBKR restart or maintenance window."""


class GatewayRateLimited(GatewayError):
    """A 429 answer: we sent more than IBKR's pacing limits allow."""


class GatewayProtocolError(GatewayError):
    """The gateway answered something we cannot parse."""


class ProcessControlError(AgentError):
    """Starting, stopping or finding a process (gateway, display) failed."""


class PortInUse(ProcessControlError):
    """Another process listens on the gateway's port: starting one would not help."""


class SupervisorError(ProcessControlError):
    """supervisord's XML-RPC interface refused a call or could not be reached."""


class BrowserUnavailable(AgentError):
    """The browser cannot run here: missing binary, driver mismatch, no display.

    An environment error: it never spends the failure budget.
    """


class LoginError(AgentError):
    """One login attempt through the gateway's login page failed."""

    #: whether this failure spends the on-disk failure budget
    spends_budget = False


class BudgetedLoginError(LoginError):
    """A failure that could lead to an account lock if repeated.

    ``ambiguous`` marks an answer that does not say the credentials or the code
    were wrong (a bare "ERROR" banner, an unknown one, a code field cleared
    without a word): an outage of the gateway shows the same, so the watcher
    asks the gateway before it spends the budget on one.
    """

    spends_budget = True
    ambiguous = False

    def __init__(self, *args: object, ambiguous: bool | None = None) -> None:
        super().__init__(*args)
        if ambiguous is not None:
            self.ambiguous = ambiguous


class CredentialsRejected(BudgetedLoginError):
    """The login page answered that the user name or password is wrong."""


class SecondFactorFailed(BudgetedLoginError):
    """The second factor was refused, or nobody approved the push in time."""


class NeverAuthenticated(BudgetedLoginError):
    """The page said "Client login succeeds" but the session never authenticated."""


class AccountLocked(LoginError):
    """The login page says the account is locked or disabled: stop for good."""


class WrongTradingMode(LoginError):
    """The page refused the Live/Paper mode and the agent could not set it right."""


class SecondFactorUnavailable(LoginError):
    """The page asks for a second factor that no configured source can give."""


class PageNotRecognised(LoginError):
    """The page matched none of the known login page shapes."""


class LoginTimeout(LoginError):
    """The page did not reach a known state in time."""


class FailureBudgetExhausted(AgentError):
    """The failure budget is spent: no login until an operator resets it."""
