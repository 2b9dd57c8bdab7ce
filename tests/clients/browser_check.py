"""Opens an HTML report in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium), measures what a reader sees, presses keys and clicks, takes a screenshot, and prints
what it found as JSON for the Rust test to check.

    python browser_check.py REPORT.html SCREENSHOT.png WIDTH
"""

import json
import pathlib
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys


def browser(width, profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},1000",
    ]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def identities(driver, column):
    return driver.execute_script(
        "var c = arguments[0];"
        "return Array.from(document.querySelectorAll('#identities tbody tr'))"
        ".map(function(r){return r.cells[c].textContent;})",
        column,
    )


def sorts(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#identities th'))"
        ".map(function(th){return [th.textContent, th.getAttribute('aria-sort')];})"
    )


def main():
    report, screenshot, width = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = {}
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(width, profile)
        try:
            driver.get(pathlib.Path(report).resolve().as_uri())
            # What a reader sees first: the summary and both charts.
            driver.save_screenshot(screenshot)
            out["viewport"] = driver.execute_script("return document.documentElement.clientWidth")
            out["table_width"] = driver.execute_script(
                "return document.getElementById('identities').getBoundingClientRect().width"
            )
            out["labels"] = driver.execute_script(
                "return Array.from(document.querySelectorAll('.bars .label')).map(function(l){"
                "return {text: l.textContent, cut: l.scrollWidth > l.clientWidth,"
                " right: l.getBoundingClientRect().right,"
                " track: l.nextElementSibling.getBoundingClientRect().left,"
                " track_width: l.nextElementSibling.getBoundingClientRect().width};})"
            )
            curve = driver.find_element(By.CSS_SELECTOR, "svg.curve")
            out["curve_width"] = curve.rect["width"]
            out["curve_texts"] = [
                t.text for t in curve.find_elements(By.TAG_NAME, "text") if t.text
            ]
            out["head_mark"] = len(curve.find_elements(By.CSS_SELECTOR, "g.head circle"))
            out["sorts_initial"] = sorts(driver)
            out["nodes_initial"] = identities(driver, 1)
            # The keyboard: Tab reaches a header button, Enter sorts by it.
            body = driver.find_element(By.TAG_NAME, "body")
            body.click()
            focused = None
            for _ in range(40):
                driver.switch_to.active_element.send_keys(Keys.TAB)
                focused = driver.switch_to.active_element
                if focused.tag_name == "button":
                    break
            out["tab_reaches"] = focused.text if focused is not None else None
            focused.send_keys(Keys.ENTER)
            out["sorts_after_enter"] = sorts(driver)
            out["identities_after_enter"] = identities(driver, 0)
            focused.send_keys(Keys.SPACE)
            out["sorts_after_space"] = sorts(driver)
            # The mouse: a click on "nodes" sorts ascending by number.
            nodes = driver.find_elements(By.CSS_SELECTOR, "#identities th button")[1]
            nodes.click()
            out["sorts_after_click"] = sorts(driver)
            out["nodes_after_click"] = identities(driver, 1)
            out["arrow"] = driver.execute_script(
                "return getComputedStyle(document.querySelectorAll('#identities th button')[1],"
                " '::after').content"
            )
        finally:
            driver.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
