"""The dashboard in a real browser (headless Chromium through Selenium) against a running lab:
a customer logs in, sees its pair reach Duplex and its lag chart grow, and never sees another
customer's pair."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

from twisted.trial.unittest import TestCase

from rcn import lab as lablib
from tests.support import REQUIRE_EXTERNAL, require_tool

OTHER = "globex"


def _selenium(testcase):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if REQUIRE_EXTERNAL:
            testcase.fail("selenium is not installed and RCN_REQUIRE_EXTERNAL=1")
        from twisted.trial.unittest import SkipTest
        raise SkipTest("selenium is not installed")
    chromium = require_tool(testcase, "chromium")
    driver_path = require_tool(testcase, "chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


class DashboardBrowserTests(TestCase):
    timeout = 180

    def until(self, what: str, predicate, limit: float = 30.0):
        deadline = time.monotonic() + limit
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"not {what} after {limit} s")
            time.sleep(0.1)      # a real browser polling a real server: wall-clock waits

    def test_a_customer_sees_its_pair_and_lag_and_nothing_else(self):
        qemu_io = require_tool(self, "qemu-io")
        browser = _selenium(self)
        self.addCleanup(browser.quit)
        directory = tempfile.mkdtemp(prefix="rcn-browser-")   # short: unix socket paths
        self.addCleanup(shutil.rmtree, directory, True)        # runs after lab down
        record = lablib.up(lablib.Topology(capacity=8 << 20), directory)
        self.addCleanup(lablib.down, directory, quiet=True)
        # another customer with a pair of its own on the same edges
        lablib.api(record, "POST", "/customers", {"id": OTHER})
        for wwn, edge in (("50:0a:09:80:00:00:00:31", "edgeA"),
                          ("50:0a:09:80:00:00:00:32", "edgeB")):
            lablib.api(record, "POST", "/storages", {"storage_wwn": wwn, "edge_id": edge,
                                                     "customer_id": OTHER})
        other = lablib.api(record, "POST", "/pairs", {
            "customer_id": OTHER, "source_wwn": "50:0a:09:80:00:00:00:31", "source_lun": 3,
            "target_wwn": "50:0a:09:80:00:00:00:32", "target_lun": 3, "policy": "A-1"})
        mgmt = next(d for d in record["devices"] if d["name"] == "mgmt")

        browser.get(mgmt["urls"]["dashboard"])
        browser.find_element("id", "token").send_keys(record["customer_token"])
        browser.find_element("css selector", "#login-form button").click()
        who = self.until("logged in", lambda: browser.find_element("id", "who").text)
        self.assertEqual(who, f"customer {lablib.LAB_CUSTOMER}")

        def rows():
            return browser.find_elements("css selector", "#pairs tbody tr")
        self.until("the pair shown Duplex", lambda: any(
            "duplex" in r.text for r in rows()))
        shown = [r.get_attribute("data-pair") for r in rows()]
        self.assertNotIn(str(other["id"]), shown)
        self.assertNotIn("00:31", browser.page_source)
        # writes make lag points; the chart grows as the reports come in
        points = int(browser.find_element("id", "lag-chart").get_attribute("data-points") or 0)
        subprocess.run([qemu_io, "-f", "raw", record["nbd_url"], "-c", "write -P 0x42 0 1M"],
                       check=True, capture_output=True)
        self.until("more lag points", lambda: int(browser.find_element(
            "id", "lag-chart").get_attribute("data-points") or 0) > points + 1)
        self.assertTrue(browser.find_elements("css selector", "#lag-chart polyline.lag-line"))
        self.assertTrue(browser.find_elements("css selector", "#topology polyline.route"))
        # the operator sees both pairs
        browser.find_element("id", "logout").click()
        browser.find_element("id", "token").send_keys(lablib.operator_token(record))
        browser.find_element("css selector", "#login-form button").click()
        self.until("both pairs for the operator", lambda: len(rows()) == 2)
