"""Waiting on the simulated login page in a real browser, for e2e tests."""

from __future__ import annotations

from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from ibeam_agents.browser import page_changed_under

LOGIN = "/sso/Login?forwardTo=22&RL=1&ip2loc=on"


def until(driver: WebDriver, condition, timeout: float = 20):
    """condition(driver) once it is truthy, read again while the page changes.

    Pages are replaced by navigation and script: an element may go stale, or
    chromedriver may say its node left the document; both mean "not yet".
    """

    def check(d):
        try:
            return condition(d)
        except NoSuchElementException:
            return None
        except WebDriverException as err:
            if page_changed_under(err):
                return None
            raise

    return WebDriverWait(driver, timeout).until(check)


def shown(driver: WebDriver, css: str):
    """The first element matching css once it is displayed."""

    def visible(d):
        return next(
            (e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None
        )

    return until(driver, visible)


def succeeded(driver: WebDriver) -> bool:
    until(
        driver,
        lambda d: "Client login succeeds" in d.find_element(By.TAG_NAME, "body").text,
    )
    return True
