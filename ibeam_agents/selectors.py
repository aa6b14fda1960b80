"""Element locators for the login page: the setting syntax and the fallback chains.

An element setting reads ``TYPE@@identifier`` with TYPE one of ``ID``, ``NAME``,
``CSS_SELECTOR``, ``CLASS_NAME``, ``XPATH``, ``TAG_NAME`` (text looked for in
``<pre>``, then ``<body>``) or ``FOR`` (a CSS selector, or the id a ``<label
for=...>`` points at).  A value without ``@@`` is an element id, as IBeam's
``*_EL_ID`` settings were.

Each element of the page has a chain of locators, tried in order until one finds
a visible element: the operator's setting first, then the current DOM
(shared/reference/gateway.md §4.2), then the older DOM (§4.1), then generic
shapes that survive renames.  The chains are plain data; the page is searched
for all of them in one script call (see ``login.read_page``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ibeam_agents.errors import ConfigError

SEPARATOR = "@@"


class How(Enum):
    """How a locator finds its element."""

    ID = "ID"
    NAME = "NAME"
    CSS_SELECTOR = "CSS_SELECTOR"
    CLASS_NAME = "CLASS_NAME"
    XPATH = "XPATH"
    TAG_NAME = "TAG_NAME"
    FOR = "FOR"


@dataclass(frozen=True)
class Locator:
    """One way to find an element; ``origin`` says which chain entry it is."""

    how: How
    value: str
    origin: str = "operator"

    def __str__(self) -> str:
        return f"{self.how.value}{SEPARATOR}{self.value}"

    def as_script_arg(self) -> list[str]:
        """Return the [how, value] pair the page script understands."""
        return [self.how.value, self.value]


def parse_locator(text: str, setting: str, *, bare: How = How.ID) -> Locator:
    """Parse an element setting; a bad one raises ConfigError naming ``setting``."""
    raw = text.strip()
    if not raw:
        raise ConfigError(f"{setting} is empty; give an element id or TYPE@@value")
    if SEPARATOR not in raw:
        return Locator(bare, raw)

    kind, _, value = raw.partition(SEPARATOR)
    names = ", ".join(how.value for how in How)
    try:
        how = How[kind.strip().upper()]
    except KeyError:
        raise ConfigError(
            f"{setting} has an unknown locator type {kind.strip()!r}; "
            f"use one of {names}, for example NAME@@username"
        ) from None
    if not value.strip():
        raise ConfigError(f"{setting} names no element after {how.value}@@")
    return Locator(how, value.strip())


def _chain(origin: str, *pairs: tuple[How, str]) -> tuple[Locator, ...]:
    return tuple(Locator(how, value, origin) for how, value in pairs)


ID, NAME, CSS, CLASS, XPATH, TEXT = (
    How.ID,
    How.NAME,
    How.CSS_SELECTOR,
    How.CLASS_NAME,
    How.XPATH,
    How.TAG_NAME,
)

# A text input inside a form that also holds a password field.
_GENERIC_USER_XPATH = (
    "//form[.//input[@type='password']]//input"
    "[@type='text' or @type='email' or not(@type)]"
)
_CODE_WORDS = "contains(., 'IB Key') or contains(., 'Authenticator') or " + (
    "contains(., 'Passcode') or contains(., 'SMS') or contains(., 'Security Code')"
)

# Built-in chains: element name -> locators after the operator's own.
BUILT_IN: dict[str, tuple[Locator, ...]] = {
    "user_name": _chain("current", (ID, "xyz-field-username"))
    + _chain("names_only", (NAME, "username"))
    + _chain("legacy", (ID, "user_name"), (NAME, "user_name"))
    + _chain(
        "generic",
        (CSS, "input[autocomplete=username]"),
        (CSS, "form input[type=email]"),
        (XPATH, _GENERIC_USER_XPATH),
    ),
    "password": _chain("current", (ID, "xyz-field-password"))
    + _chain("names_only", (NAME, "password"))
    + _chain("legacy", (ID, "password"))
    + _chain("generic", (CSS, "input[type=password]")),
    "submit": _chain(
        "current",
        (CSS, "form.xyzform-submit button[type=submit]"),
        (CSS, ".btn.btn-lg.xyz-button-login"),
        (CSS, ".xyzblock-username button.btn.btn-lg.btn-primary"),
    )
    + _chain("legacy", (ID, "submitForm"))
    + _chain(
        "generic",
        (CSS, ".xyzblock-username button[type=submit]"),
        (XPATH, "//form[.//input[@type='password']]//button[@type='submit']"),
        (XPATH, "//form[.//input[@type='password']]//input[@type='submit']"),
        (XPATH, "//button[normalize-space()='Log In' or normalize-space()='Login']"),
    ),
    "continue": _chain("current", (CSS, ".xyzblock-username-submit button"))
    + _chain(
        "generic",
        (XPATH, "//button[normalize-space()='Continue' or normalize-space()='Next']"),
        (XPATH, "//form[.//input[@name='username']]//button[@type='submit']"),
    ),
    "error": _chain(
        "current",
        (CSS, ".xyzblock-error .xyz-errormessage"),
        (CSS, ".xyz-errormessage"),
        (CSS, "form [role=alert]"),
        (CSS, ".is-invalid ~ .invalid-feedback"),
    )
    + _chain("legacy", (ID, "ERRORMSG"), (CSS, ".alert.alert-danger"))
    + _chain("generic", (CSS, "[role=alert]"), (CSS, ".alert-danger")),
    # What to click to flip Live/Paper (the checkbox itself is often hidden).
    "mode_switch": _chain(
        "current", (How.FOR, "toggle1"), (CSS, "label[for=paperSwitch]")
    )
    + _chain("generic", (CSS, "input[name=paperSwitch]")),
    # The checkbox that holds the Live/Paper state: checked means Paper.
    "mode_checkbox": _chain("current", (ID, "toggle1"), (NAME, "paperSwitch")),
    "method_picker": _chain(
        "current",
        (CSS, "select.xyz-multipleselect"),
        (CSS, ".xyzblock-multiplesf select"),
    )
    + _chain("legacy", (ID, "sf_select"))
    + _chain("generic", (XPATH, f"//select[option[{_CODE_WORDS}]]")),
    "code_input": _chain(
        "current",
        (ID, "xyz-field-silver-response"),
        (ID, "xyz-field-bronze-response"),
        (ID, "xyz-field-gold-response"),
        (ID, "xyz-field-temp-response"),
    )
    + _chain("legacy", (ID, "chlginput"))
    + _chain(
        "generic",
        (CSS, "input[autocomplete=one-time-code]"),
        (CSS, "input[placeholder='Security Code' i]"),
        (CSS, "input[aria-label='Security Code' i]"),
        (CSS, "input[name$=-response]"),
        (CSS, "input[inputmode=numeric]"),
    ),
    "push_block": _chain(
        "current", (CSS, ".xyzblock-notification"), (CSS, ".xyz-notificationimg")
    )
    + _chain("legacy", (CLASS, "login-step-notification")),
    "resend": _chain("current", (CSS, ".xyz-resendnotification"))
    + _chain("legacy", (CSS, "a[onclick*='resendNotification()']")),
    "promo_skip": _chain("legacy", (CSS, "a.ibkey-promo-skip"))
    + _chain(
        "generic",
        (CLASS, "ibkey-promo-skip"),
        (CSS, "[class*=promo] a[class*=skip], [class*=promo] button[class*=skip]"),
    ),
    "loading": _chain("current", (CSS, ".xyzblock-loading"))
    + _chain("legacy", (CSS, ".loading-spinner"))
    + _chain("generic", (CSS, "form [aria-busy=true]")),
}

# Settings that feed the first entry of a chain, for messages.
SETTING_FOR = {
    "user_name": "IBEAM_USER_NAME_EL",
    "password": "IBEAM_PASSWORD_EL",
    "submit": "IBEAM_SUBMIT_EL",
    "success": "IBEAM_SUCCESS_EL_TEXT",
}

# Chains whose element must be visible to count; the others may be hidden.
HIDDEN_OK = frozenset({"mode_checkbox"})
# Chains whose element must carry text to count (an empty alert box is no error).
TEXT_NEEDED = frozenset({"error"})


def success_chain(text: str) -> tuple[Locator, ...]:
    """Chain for the success marker: a bare value is the text to look for."""
    locator = parse_locator(text, "IBEAM_SUCCESS_EL_TEXT", bare=How.TAG_NAME)
    return (locator,)


def build_chains(
    overrides: dict[str, str | None], success_text: str
) -> dict[str, tuple[Locator, ...]]:
    """Return every chain, each operator override parsed and put first."""
    chains = dict(BUILT_IN)
    for name, text in overrides.items():
        if text is None or not text.strip():
            continue
        setting = SETTING_FOR.get(name, name)
        chains[name] = (parse_locator(text, setting),) + chains[name]
    chains["success"] = success_chain(success_text)
    return chains


# --- reading the page --------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """The first visible element a chain found, and what the page says about it."""

    locator: Locator
    element: Any = None
    text: str = ""
    value: str | None = None  # selects only: the chosen option's value
    value_len: int = 0  # inputs: how many characters they hold
    checked: bool | None = None
    options: tuple[tuple[str, str], ...] = ()  # selects: (text, value)
    ident: str = ""  # what the element is called on the page: #id, tag[name=...]


@dataclass(frozen=True)
class PageSnapshot:
    """One reading of the page: which chains found something, and page facts."""

    found: Mapping[str, Found] = field(default_factory=dict)
    url: str = ""
    ready_state: str = "complete"
    document: str = ""
    mutations: int = 0
    invalid: tuple[str, ...] = ()  # "chain: locator" entries the page refused

    def has(self, key: str) -> bool:
        return key in self.found

    def get(self, key: str) -> Found | None:
        return self.found.get(key)

    def text(self, key: str) -> str:
        item = self.found.get(key)
        return item.text if item else ""


# One call reads every chain: the first locator of each chain that finds a
# visible element wins.  It also counts DOM mutations (to tell whether the page
# reacted to a click) and tags the document (to see a navigation).  Input values
# never leave the page, only their length.
PAGE_SCRIPT = r"""
const specs = arguments[0];
const w = window;
if (!w.__ibeamDoc) {
  w.__ibeamDoc = String(Math.random()).slice(2);
  w.__ibeamMutations = 0;
  try {
    new MutationObserver((list) => { w.__ibeamMutations += list.length; })
      .observe(document, {subtree: true, childList: true, attributes: true,
                          characterData: true});
  } catch (e) { w.__ibeamMutations = -1; }
}
function shown(el) {
  if (!el || !el.isConnected) return false;
  if (el === document.body || el === document.documentElement) return true;
  if (el.checkVisibility && !el.checkVisibility(
      {checkOpacity: true, checkVisibilityCSS: true,
       opacityProperty: true, visibilityProperty: true})) return false;
  return Array.from(el.getClientRects()).some((r) => r.width > 0 && r.height > 0);
}
function textOf(el) {
  return ((el.innerText || el.textContent || '') + '').trim().slice(0, 500);
}
function identOf(el) {
  const name = el.getAttribute('name');
  const tag = el.tagName.toLowerCase();
  if (el.id) return '#' + el.id;
  return name ? tag + '[name=' + name + ']' : tag;
}
function find(how, value) {
  switch (how) {
    case 'ID':
      return Array.from(document.querySelectorAll('[id="' + CSS.escape(value) + '"]'));
    case 'NAME':
      return Array.from(document.getElementsByName(value));
    case 'CSS_SELECTOR':
      return Array.from(document.querySelectorAll(value));
    case 'FOR':
      return Array.from(document.querySelectorAll(/^[A-Za-z][\w-]*$/.test(value)
        ? 'label[for="' + CSS.escape(value) + '"]' : value));
    case 'CLASS_NAME':
      return Array.from(document.getElementsByClassName(value));
    case 'XPATH': {
      const r = document.evaluate(value, document, null,
        XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null);
      const out = [];
      for (let i = 0; i < r.snapshotLength; i++) out.push(r.snapshotItem(i));
      return out.filter((n) => n.nodeType === 1);
    }
    case 'TAG_NAME': {
      const places = Array.from(document.querySelectorAll('pre'));
      if (document.body) places.push(document.body);
      return places.filter((el) => (el.innerText || '').includes(value));
    }
  }
  return [];
}
const found = {};
const invalid = [];
for (const [key, needShown, needText, locators] of specs) {
  for (let i = 0; i < locators.length && !(key in found); i++) {
    let els = [];
    try { els = find(locators[i][0], locators[i][1]); }
    catch (e) { invalid.push(key + ': ' + locators[i][0] + '@@' + locators[i][1]); }
    for (const el of els) {
      if (needShown && !shown(el)) continue;
      const tag = el.tagName;
      const item = {i: i, el: el, text: tag === 'INPUT' ? '' : textOf(el),
                    ident: identOf(el)};
      if (needText && !item.text) continue;
      if (tag === 'INPUT' || tag === 'TEXTAREA') {
        item.len = (el.value || '').length;
        if (el.type === 'checkbox' || el.type === 'radio') item.checked = el.checked;
      }
      if (tag === 'SELECT') {
        item.value = el.value;
        item.options = Array.from(el.options).map((o) => [o.text.trim(), o.value]);
        item.text = el.selectedIndex >= 0 ? el.options[el.selectedIndex].text : '';
      }
      found[key] = item;
      break;
    }
  }
}
return {found: found, invalid: invalid, url: location.href,
        ready: document.readyState, doc: w.__ibeamDoc,
        mutations: w.__ibeamMutations};
"""

MARK_SCRIPT = "return [window.__ibeamDoc || '', window.__ibeamMutations || 0];"


def script_spec(chains: Mapping[str, tuple[Locator, ...]]) -> list[list[Any]]:
    """The argument PAGE_SCRIPT takes for these chains."""
    return [
        [
            name,
            name not in HIDDEN_OK,
            name in TEXT_NEEDED,
            [locator.as_script_arg() for locator in chain],
        ]
        for name, chain in chains.items()
    ]


def parse_snapshot(
    raw: Mapping[str, Any], chains: Mapping[str, tuple[Locator, ...]]
) -> PageSnapshot:
    """Turn PAGE_SCRIPT's answer into a PageSnapshot."""
    found = {}
    for name, item in (raw.get("found") or {}).items():
        options = tuple((str(t), str(v)) for t, v in item.get("options") or ())
        found[name] = Found(
            locator=chains[name][int(item["i"])],
            element=item.get("el"),
            text=str(item.get("text") or ""),
            value=item.get("value"),
            value_len=int(item.get("len") or 0),
            checked=item.get("checked"),
            options=options,
            ident=str(item.get("ident") or ""),
        )
    return PageSnapshot(
        found=found,
        url=str(raw.get("url") or ""),
        ready_state=str(raw.get("ready") or ""),
        document=str(raw.get("doc") or ""),
        mutations=int(raw.get("mutations") or 0),
        invalid=tuple(raw.get("invalid") or ()),
    )
