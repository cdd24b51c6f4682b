"""The org portal in real headless Chromium against `webhooks dev`: open a
portal link, create an endpoint, send a test event and watch it delivered,
make a delivery fail and retry it, rotate the secret, disable/enable/edit
and delete, and check that another org's session sees nothing of the first
org and that an expired session is refused. Screenshots go to docs/.
"""
import json
import os
import time
from pathlib import Path

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import standard_signature_valid, x_signature_valid

# Screenshots of the main screens; `make portal-screenshots` writes them to docs/.
DOCS = Path(os.environ.get("PORTAL_SCREENSHOT_DIR") or Path(__file__).resolve().parents[2] / ".tmp" / "portal-screenshots")


def wait(driver, what, timeout=20):
    def check(d):
        try:
            return what(d)
        except StaleElementReferenceException:
            return False
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)


def rows(driver, testid):
    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def row_texts(driver, testid):
    out = []
    for r in rows(driver, testid):
        try:
            out.append(r.text)
        except StaleElementReferenceException:
            pass
    return out


def button(driver, label):
    """The visible button named `label`, scrolled to the middle of the
    window (clear of the sticky header) as a person would see it."""
    b = wait(driver, lambda d: next(
        (b for b in d.find_elements(By.TAG_NAME, "button") if b.is_displayed() and b.text.strip() == label), None))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", b)
    return b


def dead_row(driver):
    for r in rows(driver, "delivery-row"):
        if "dead_lettered" in r.text:
            return r
    raise StaleElementReferenceException("no dead_lettered row yet")


def open_portal(driver, url):
    """Opens a portal link as in a new tab: no session of an earlier test
    is left in this tab's sessionStorage (a link for another org would ask
    before switching)."""
    if driver.current_url.startswith(url.split("/portal", 1)[0]):
        driver.execute_script("sessionStorage.clear()")
    driver.get("about:blank")
    driver.get(url)
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").is_displayed())


def screenshot(driver, name, height=None):
    DOCS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("document.getElementById('toast').hidden = true")
    if height:
        size = driver.get_window_size()
        driver.set_window_size(size["width"], height)
        time.sleep(0.3)
    driver.save_screenshot(str(DOCS / name))
    if height:
        driver.set_window_size(size["width"], size["height"])


def test_an_org_manages_its_endpoints_and_deliveries(dev, receiver, browser):
    d = browser
    url = dev.portal_url("acme")
    token = url.split("#token=", 1)[1]
    open_portal(d, url)

    # The token leaves the address bar at once and is kept for the tab only.
    assert "token=" not in d.current_url
    assert d.execute_script("return sessionStorage.getItem('webhooks.portal.token')") == token
    assert wait(d, lambda d: "No endpoints yet" in d.page_source)
    assert d.find_element(By.ID, "org").text == "acme"
    screenshot(d, "portal-empty.png")

    # Create an endpoint, by keyboard where a person would type.
    button(d, "Add your first endpoint").click()
    url_input = wait(d, lambda d: d.find_element(By.ID, "f-url"))
    url_input.send_keys(receiver.url("/hooks"))
    d.find_element(By.ID, "f-desc").send_keys("Billing service")
    d.find_element(By.CSS_SELECTOR, 'input[name=type][value="invoice.paid"]').click()
    d.find_element(By.CSS_SELECTOR, 'input[name=type][value="lead_won"]').click()
    d.find_element(By.ID, "f-desc").send_keys(Keys.ENTER)
    wait(d, lambda d: "/endpoints/ep_" in d.current_url)
    endpoint_id = d.current_url.rsplit("/", 1)[1]
    assert wait(d, lambda d: d.find_element(By.ID, "endpoint-url").text == receiver.url("/hooks"))

    # Send a test event and watch it arrive, signed, and show as delivered.
    Select(d.find_element(By.CSS_SELECTOR, 'select[aria-label="Test event type"]')).select_by_value("invoice.paid")
    d.find_element(By.ID, "send-test").click()
    assert wait(d, lambda d: row_texts(d, "delivery-row") and "delivered" in row_texts(d, "delivery-row")[0])
    assert len(receiver.received()) == 1
    headers, body = receiver.received()[0]
    assert headers["x-webhook-event"] == "invoice.paid"

    # Reveal the secret: it verifies both signatures of what was received.
    button(d, "Reveal").click()
    secret = wait(d, lambda d: (t := d.find_element(By.ID, "secret").text).startswith("whsec_") and "•" not in t and t)
    assert x_signature_valid(secret, headers, body)
    assert standard_signature_valid(secret, headers, body)

    # Make one fail: the receiver answers 500; after two attempts it is dead-lettered.
    receiver.answer(500, b"receiver says no")
    d.find_element(By.ID, "send-test").click()
    assert wait(d, lambda d: any("dead_lettered" in t for t in row_texts(d, "delivery-row")), timeout=30)
    wait(d, lambda d: dead_row(d).click() or True)  # opens its attempts
    assert wait(d, lambda d: "receiver says no" in d.page_source)
    assert "HTTP 500" in d.page_source
    screenshot(d, "portal-deliveries.png", height=1250)

    # Retry it once the receiver is healthy again: it ends delivered.
    receiver.answer(204)
    wait(d, lambda d: dead_row(d).find_element(By.CSS_SELECTOR, '[data-action="retry"]').click() or True)
    assert wait(d, lambda d: (t := row_texts(d, "delivery-row")) and len(t) == 2
                and all("delivered" in x for x in t), timeout=30)
    status, page = dev.call("GET", f"/v1/endpoints/{endpoint_id}/deliveries", dev.token("acme"))
    assert status == 200 and [x["status"] for x in page["data"]] == ["delivered", "delivered"]

    # Recover: another failure, then "Recover dead-lettered" since a time sends it again.
    receiver.answer(500, b"down for maintenance")
    d.find_element(By.ID, "send-test").click()
    assert wait(d, lambda d: any("dead_lettered" in t for t in row_texts(d, "delivery-row")), timeout=30)
    receiver.answer(204)
    button(d, "Recover dead-lettered").click()
    assert wait(d, lambda d: "1 dead-lettered delivery sent again" in d.find_element(By.ID, "toast").text)
    assert wait(d, lambda d: (t := row_texts(d, "delivery-row")) and len(t) == 3
                and all("delivered" in x for x in t), timeout=30)

    # The status filter shows only what it names.
    Select(d.find_element(By.ID, "status-filter")).select_by_value("dead_lettered")
    assert wait(d, lambda d: not rows(d, "delivery-row") and "No deliveries here yet" in d.page_source)
    Select(d.find_element(By.ID, "status-filter")).select_by_value("")
    wait(d, lambda d: len(rows(d, "delivery-row")) == 3)

    # Rotate the secret: a new one is shown, and it is the API's.
    button(d, "Rotate…").click()
    button(d, "Rotate secret").click()
    new_secret = wait(d, lambda d: (t := d.find_element(By.ID, "secret").text) != secret and t.startswith("whsec_") and t)
    status, body = dev.call("GET", f"/v1/endpoints/{endpoint_id}/secret", dev.token("acme"))
    assert status == 200 and body["secret"] == new_secret

    # Disable, then enable again.
    button(d, "Disable").click()
    assert wait(d, lambda d: "Disabled" in d.find_element(By.CLASS_NAME, "head").text)
    _, ep = dev.call("GET", f"/v1/endpoints/{endpoint_id}", dev.token("acme"))
    assert ep["enabled"] is False
    button(d, "Enable").click()
    assert wait(d, lambda d: "Enabled" in d.find_element(By.CLASS_NAME, "head").text)
    _, ep = dev.call("GET", f"/v1/endpoints/{endpoint_id}", dev.token("acme"))
    assert ep["enabled"] is True

    # Edit the description.
    button(d, "Edit").click()
    desc = wait(d, lambda d: d.find_element(By.ID, "f-desc"))
    desc.clear()
    desc.send_keys("Billing service (EU)")
    button(d, "Save changes").click()
    assert wait(d, lambda d: "Billing service (EU)" in d.page_source)

    # The endpoints table lists it, with its success rate.
    d.find_element(By.CSS_SELECTOR, '[data-nav="endpoints"]').click()
    assert wait(d, lambda d: row_texts(d, "endpoint-row") and receiver.url("/hooks") in row_texts(d, "endpoint-row")[0])
    assert wait(d, lambda d: "100%" in row_texts(d, "endpoint-row")[0])
    # A second endpoint, disabled with a reason, to show how that looks.
    _, second = dev.call("POST", "/v1/endpoints", dev.token("acme"), {
        "url": "https://crm.example.com/webhooks/devsphere", "event_types": ["*"], "description": "CRM sync"})
    dev.call("PATCH", f"/v1/endpoints/{second['id']}", dev.token("acme"), {"enabled": False})
    d.refresh()
    assert wait(d, lambda d: len(rows(d, "endpoint-row")) == 2)
    wait(d, lambda d: "…" not in d.find_element(By.TAG_NAME, "tbody").text)
    screenshot(d, "portal-endpoints.png")

    # The catalogue: an example payload per type, headers, snippets.
    d.find_element(By.CSS_SELECTOR, '[data-nav="event-types"]').click()
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".catalogue details")) == 11)
    first = d.find_elements(By.CSS_SELECTOR, ".catalogue summary")[4]
    first.click()
    assert wait(d, lambda d: '"invoice_id"' in d.page_source)
    for text in ["webhook-signature", "X-Signature", "standardwebhooks"]:
        assert text in d.page_source
    button(d, "Plain HMAC (X-Signature)").click()
    assert "hexdigest" in d.find_element(By.ID, "snippet").text
    d.execute_script("window.scrollTo(0, 0)")
    screenshot(d, "portal-event-types.png", height=1100)

    # Phone width: the table stacks and stays readable.
    d.set_window_size(390, 844)
    d.find_element(By.CSS_SELECTOR, '[data-nav="endpoints"]').click()
    wait(d, lambda d: len(rows(d, "endpoint-row")) == 2)
    wait(d, lambda d: "…" not in d.find_element(By.TAG_NAME, "tbody").text)
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    screenshot(d, "portal-phone.png")
    d.set_window_size(1280, 900)

    # Delete the second endpoint through the page.
    wait(d, lambda d: next(r for r in rows(d, "endpoint-row") if "crm.example.com" in r.text).click() or True)
    wait(d, lambda d: "crm.example.com" in d.find_element(By.ID, "endpoint-url").text)
    button(d, "Delete").click()
    button(d, "Delete endpoint").click()
    assert wait(d, lambda d: len(rows(d, "endpoint-row")) == 1)
    status, _ = dev.call("GET", f"/v1/endpoints/{second['id']}", dev.token("acme"))
    assert status == 404

    # The session token never reached the server's log.
    log = dev.server_log()
    assert "/portal-api/v1/endpoints" in log
    assert token not in log and token.split(".")[2] not in log


def test_another_orgs_session_sees_nothing_of_the_first(dev, receiver, browser):
    d = browser
    acme = dev.token("acme")
    status, created = dev.call("POST", "/v1/endpoints", acme, {"url": receiver.url("/acme-only"), "event_types": ["*"]})
    assert status == 201
    url = dev.portal_url("globex")
    open_portal(d, url)
    assert wait(d, lambda d: "No endpoints yet" in d.page_source)
    assert d.find_element(By.ID, "org").text == "globex"
    assert rows(d, "endpoint-row") == []
    assert "acme-only" not in d.page_source
    # Even addressed directly, acme's endpoint is not found for globex.
    d.get(url.split("#")[0] + f"#/endpoints/{created['id']}")
    assert wait(d, lambda d: "endpoint not found" in d.page_source)
    token = url.split("#token=", 1)[1]
    status, body = dev.call("GET", f"/portal-api/v1/endpoints/{created['id']}", token)
    assert status == 404, body
    status, listing = dev.call("GET", "/portal-api/v1/endpoints", token)
    assert status == 200 and listing["data"] == []
    # A portal session cannot publish events nor open a longer session.
    status, _ = dev.call("POST", "/portal-api/v1/events", token, {"type": "lead_won", "data": {}})
    assert status == 403
    status, _ = dev.call("POST", "/portal-api/v1/portal-sessions", token, {"ttl_seconds": 86400})
    assert status == 403


def test_an_expired_session_is_refused(dev, browser):
    d = browser
    url = dev.portal_url("acme", ttl=1)
    token = url.split("#token=", 1)[1]
    time.sleep(2.2)
    open_portal(d, url)
    notice = wait(d, lambda d: d.find_element(By.ID, "session-ended"))
    assert "expired" in notice.text
    assert rows(d, "endpoint-row") == []
    assert d.execute_script("return sessionStorage.getItem('webhooks.portal.token')") is None
    status, body = dev.call("GET", "/portal-api/v1/endpoints", token)
    assert status == 401 and body["error"]["code"] == "unauthorized", json.dumps(body)
    screenshot(d, "portal-expired.png")


def test_the_page_loads_nothing_from_elsewhere(dev, browser):
    d = browser
    open_portal(d, dev.portal_url("acme"))
    wait(d, lambda d: rows(d, "endpoint-row"))
    origin = dev.base
    resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources, "the page loaded no resources at all"
    assert all(r.startswith(origin) for r in resources), resources
    # No CSP violation was reported while the page ran.
    logs = [e for e in d.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert logs == []


def test_the_page_is_usable_by_keyboard(dev, browser):
    d = browser
    open_portal(d, dev.portal_url("keyboard-org"))
    wait(d, lambda d: "No endpoints yet" in d.page_source)
    body = d.find_element(By.TAG_NAME, "body")
    # Tab from the top reaches "Add endpoint"; Enter opens the form.
    for _ in range(12):
        body = d.switch_to.active_element
        if body.text == "Add endpoint":
            break
        body.send_keys(Keys.TAB)
    assert d.switch_to.active_element.text == "Add endpoint"
    d.switch_to.active_element.send_keys(Keys.ENTER)
    url_input = wait(d, lambda d: d.find_element(By.ID, "f-url"))
    assert d.switch_to.active_element == url_input, "the form takes the focus"
    # Submitting without an event type says what is missing, and writes nothing.
    url_input.send_keys("http://127.0.0.1:9/keyboard", Keys.ENTER)
    assert wait(d, lambda d: "Choose at least one event type" in d.page_source)
    # Escape closes the form.
    d.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert wait(d, lambda d: not d.find_elements(By.TAG_NAME, "dialog"))
    status, listing = dev.call("GET", "/v1/endpoints", dev.token("keyboard-org"))
    assert status == 200 and listing["data"] == []
    # Every control has a visible name (no unlabeled buttons or inputs).
    unnamed = d.execute_script("""
      return [...document.querySelectorAll('button, input, select, a[href]')].filter(e => {
        const label = e.labels && e.labels.length ? e.labels[0].textContent : '';
        return !(e.textContent.trim() || e.getAttribute('aria-label') || label || e.title);
      }).map(e => e.outerHTML);
    """)
    assert unnamed == []


def session_token(driver):
    return driver.execute_script("return sessionStorage.getItem('webhooks.portal.token')")


def test_a_link_for_another_org_asks_before_it_switches(dev, browser):
    d = browser
    acme_url = dev.portal_url("acme")
    acme_token = acme_url.split("#token=", 1)[1]
    open_portal(d, acme_url)
    assert wait(d, lambda d: d.find_element(By.ID, "org").text == "acme")

    # A link for globex opened in the same tab: the page asks first, with the
    # safe answer focused; staying keeps acme's session.
    d.get(dev.portal_url("globex"))
    prompt = wait(d, lambda d: d.find_element(By.ID, "switch-org"))
    assert "acme" in prompt.text and "globex" in prompt.text, prompt.text
    assert "token=" not in d.current_url
    assert rows(d, "endpoint-row") == []
    assert d.switch_to.active_element.text == "Stay in acme"
    screenshot(d, "portal-switch-org.png")
    button(d, "Stay in acme").click()
    assert wait(d, lambda d: d.find_element(By.ID, "org").text == "acme")
    assert wait(d, lambda d: not d.find_elements(By.ID, "switch-org"))
    assert session_token(d) == acme_token

    # Asked again, switching takes globex's session.
    globex_url = dev.portal_url("globex")
    d.get(globex_url)
    wait(d, lambda d: d.find_element(By.ID, "switch-org"))
    button(d, "Switch to globex").click()
    assert wait(d, lambda d: d.find_element(By.ID, "org").text == "globex")
    assert session_token(d) == globex_url.split("#token=", 1)[1]

    # A new link for the same org does not ask.
    again = dev.portal_url("globex", ttl=600)
    d.get(again)
    assert wait(d, lambda d: session_token(d) == again.split("#token=", 1)[1])
    assert wait(d, lambda d: "No endpoints yet" in d.page_source or rows(d, "endpoint-row"))
    assert not d.find_elements(By.ID, "switch-org")

    # Nor does a link for another org once the tab's session has expired
    # (left in sessionStorage while the tab was elsewhere).
    short = dev.portal_url("acme", ttl=5)
    d.get(short)
    wait(d, lambda d: d.find_element(By.ID, "switch-org"))
    button(d, "Switch to acme").click()
    assert wait(d, lambda d: session_token(d) == short.split("#token=", 1)[1])
    d.get("about:blank")
    time.sleep(5.2)
    d.get(dev.portal_url("globex"))
    assert wait(d, lambda d: d.find_element(By.ID, "org").text == "globex")
    assert not d.find_elements(By.ID, "switch-org")


def test_no_page_may_frame_the_portal(dev, browser):
    d = browser
    # Even a page of the API's own origin: frame-ancestors 'none'.
    d.get(dev.base + "/healthz")
    d.execute_script("""
      const f = document.createElement('iframe');
      f.id = 'frame';
      f.onload = () => { f.dataset.loaded = '1'; };
      f.src = '/portal';
      document.body.appendChild(f);
    """)
    wait(d, lambda d: d.execute_script("return document.getElementById('frame').dataset.loaded === '1'"))
    framed = d.execute_script("""
      try {
        const doc = document.getElementById('frame').contentDocument;
        return !!(doc && doc.getElementById('main'));
      } catch (e) { return false; }
    """)
    assert framed is False, "the portal rendered inside a frame"
