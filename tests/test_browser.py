"""The admin and GraphiQL in a real headless browser (Debian's chromium and chromedriver).

Records are made by real GraphQL requests to the live server first; the
browser then logs in and follows the pages an auditor would. One browser for
the module; every wait is explicit. Under ``CI=true`` a missing browser fails
the run; elsewhere these tests are skipped, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from graphql_relay import to_global_id

from tests.conftest import make_token

pytestmark = [pytest.mark.browser, pytest.mark.server]

CHROMIUM = os.environ.get("GQL_AUDIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GQL_AUDIT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 15


def missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)) and not shutil.which(path):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named explicitly: Selenium Manager would try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait(browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A page that is being replaced (a form just submitted) can hand back an element
    # of the old page; asking again, on the new one, is the right answer to that.
    return WebDriverWait(browser, WAIT, ignored_exceptions=(StaleElementReferenceException,))


def find(browser, css):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def click_link(browser, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait(browser).until(ec.element_to_be_clickable((By.PARTIAL_LINK_TEXT, text))).click()


def page_says(browser, text):
    wait(browser).until(lambda b: text in b.find_element("tag name", "body").text, f"the page never said {text!r}")


def graphql(live_server, query, username, request_id):
    request = urllib.request.Request(
        live_server.url + "/graphql/",
        data=json.dumps({"query": query}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"JWT {make_token(username)}",
            "X-Request-ID": request_id,
        },
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        body = json.loads(response.read())
    assert response.headers["X-Request-ID"] == request_id
    return body


@pytest.fixture
def records(live_server, users, settings, django_user_model):
    """An auditor, and the records of three requests: a read, a change with a denied field, a read by bob."""
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    django_user_model.objects.create_superuser("root", "root@example.org", "root-password")
    graphql(live_server, "query MyProfile { me { username profile { phone fullName } } }", "alice", "br-read")
    bobs = users["bob"].documents.first()
    mutation = (
        'mutation Edit { updateProfile(phone: "555") { profile { phone } } '
        'updateDocument(id: "%s") { document { id } } }'
    )
    body = graphql(live_server, mutation % to_global_id("DocumentNode", bobs.pk), "alice", "br-mixed")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    graphql(live_server, "{ me { profile { phone } } }", "bob", "br-bob")
    return users


def log_in(browser, live_server, username="root", password="root-password"):
    browser.delete_all_cookies()
    browser.get(live_server.url + "/admin/login/?next=/admin/")
    find(browser, "#id_username").send_keys(username)
    find(browser, "#id_password").send_keys(password)
    find(browser, "#login-form [type=submit]").click()
    find(browser, "#user-tools")


def test_a_read_its_fields_address_and_request_trail(browser, live_server, records):
    log_in(browser, live_server)
    browser.get(live_server.url + "/admin/gql_audit/requestreads/?request_id=br-read")
    find(browser, "#result_list")
    rows = browser.find_elements("css selector", "#result_list tbody tr")
    assert len(rows) == 1
    rows[0].find_element("css selector", "th a").click()
    page_says(browser, "Objects read")
    body = browser.find_element("tag name", "body").text
    for shown in ("phone", "fullName", "127.0.0.1", "MyProfile", "alice"):
        assert shown in body, shown
    click_link(browser, "br-read")
    page_says(browser, "Reads (2)")  # alice and her profile
    assert "Change entries (0)" in browser.find_element("tag name", "body").text

    browser.get(live_server.url + "/admin/gql_audit/requestreads/trail/?request_id=br-mixed")
    page_says(browser, "Security events (1)")
    body = browser.find_element("tag name", "body").text
    assert "Change entries (1)" in body and "forbidden" in body and "mutation Edit" in body


def test_security_events_filtered_by_kind_and_actor(browser, live_server, records):
    log_in(browser, live_server)
    browser.get(live_server.url + "/admin/gql_audit/securityevent/")
    find(browser, "#changelist-filter")
    click_link(browser, "forbidden")
    wait(browser).until(lambda b: "kind__exact=forbidden" in b.current_url)
    box = find(browser, 'input[type=search][name="actor"]')
    box.send_keys("alice\n")
    wait(browser).until(lambda b: "actor=alice" in b.current_url and "kind__exact=forbidden" in b.current_url)
    rows = browser.find_elements("css selector", "#result_list tbody tr")
    assert len(rows) == 1
    assert "alice" in rows[0].find_element("css selector", ".field-username").text
    assert "br-mixed" in rows[0].text
    from selenium.webdriver.common.keys import Keys

    box = find(browser, 'input[type=search][name="actor"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("bob\n")
    wait(browser).until(lambda b: "actor=bob" in b.current_url)
    assert not browser.find_elements("css selector", "#result_list tbody tr")


def test_an_objects_access_history_through_the_mixin(browser, live_server, records):
    log_in(browser, live_server)
    profile = records["alice"].profile
    browser.get(live_server.url + f"/admin/example_service/profile/{profile.pk}/change/")
    find(browser, "a.gql-audit-access-history").click()
    page_says(browser, "Reads (2)")
    body = browser.find_element("tag name", "body").text
    assert "br-read" in body and "br-mixed" in body and "br-bob" not in body
    assert "Changes (" in body and "phone" in body
    click_link(browser, "br-mixed")
    page_says(browser, "Security events (1)")


def test_graphiql_runs_a_query_with_no_cdn_under_a_strict_csp(browser, live_server, records):
    query = "{ serviceStatus { name ok } }"
    browser.get_log("browser")  # what earlier pages logged
    browser.get(live_server.url + "/graphql/#query=" + quote(query))
    find(browser, ".graphiql-container")
    find(browser, ".graphiql-execute-button").click()
    wait(browser).until(
        lambda b: (
            "example-service"
            in b.execute_script("var r = document.querySelector('.result-window'); return r ? r.innerText : '';")
        )
    )
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    origin = urlsplit(live_server.url).netloc
    assert resources and all(urlsplit(url).netloc == origin for url in resources), resources
    problems = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]
    ]
    assert not problems, problems


def test_an_auditor_narrows_history_by_time_and_sees_tried_usernames(browser, live_server, records):
    # A failed login by someone who is nobody: its row names the username tried.
    request = urllib.request.Request(
        live_server.url + "/graphql/",
        data=json.dumps({"query": 'mutation { tokenAuth(username: "mallory", password: "guess") { token } }'}).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": "br-login"},
    )
    urllib.request.urlopen(request, timeout=WAIT).read()
    log_in(browser, live_server)
    browser.get(live_server.url + "/admin/gql_audit/securityevent/")
    box = find(browser, 'input[type=search][name="actor"]')
    box.send_keys("mallory\n")
    wait(browser).until(lambda b: "actor=mallory" in b.current_url)
    page_says(browser, "no user has the username 'mallory' now")
    [row] = browser.find_elements("css selector", "#result_list tbody tr")
    assert "mallory (tried)" in row.find_element("css selector", ".field-username").text and "br-login" in row.text

    # The reads list: each object by name, with the fields read on it.
    browser.get(live_server.url + "/admin/gql_audit/requestreads/?request_id=br-read")
    cell = find(browser, "#result_list .field-objects_read").text
    assert f"Profile of {records['alice'].pk}" in cell and "fullName, phone" in cell

    # The access history, narrowed to a window with no reads, then widened again.
    profile = records["alice"].profile
    browser.get(live_server.url + f"/admin/example_service/profile/{profile.pk}/access-history/")
    page_says(browser, "Reads (2)")
    find(browser, "#history-until").send_keys("2000-01-01\n")
    wait(browser).until(lambda b: "until=2000-01-01" in b.current_url)
    page_says(browser, "Reads (0)")
    box = find(browser, "#history-until")
    box.clear()
    box.send_keys("garbage\n")
    page_says(browser, "not a date or date-time")

    # Each page looked at is on the trail, the auditor its actor.
    browser.get(live_server.url + "/admin/gql_audit/securityevent/?kind__exact=trail_accessed")
    find(browser, "#result_list")
    assert len(browser.find_elements("css selector", "#result_list tbody tr")) >= 4
    assert "root" in find(browser, "#result_list tbody tr .field-username").text
