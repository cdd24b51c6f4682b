"""The portal's Events page, a delivery's request, an endpoint's health and
its payload filter (issue 25), in real headless Chromium against `webhooks
dev` and a real local receiver. Screenshots go to docs/ (see test_portal).
"""
import json
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from test_portal import button, open_portal, row_texts, rows, screenshot, wait

MASKED = "********"


def publish(dev, org, event_type, data):
    status, body = dev.call("POST", "/v1/events", dev.token(org), {"type": event_type, "data": data})
    assert status == 202, body
    return body["id"]


def delivered(dev, org, event_id, n=1, timeout=30):
    """The event's deliveries once `n` of them have finished."""
    deadline = time.time() + timeout
    while True:
        status, event = dev.call("GET", f"/v1/events/{event_id}", dev.token(org))
        assert status == 200, event
        done = [d for d in event["deliveries"] if d["status"] in ("delivered", "dead_lettered")]
        if len(done) >= n:
            return event["deliveries"]
        assert time.time() < deadline, event
        time.sleep(0.2)


def all_event_ids(dev, org, event_type=None):
    ids, cursor = [], None
    while True:
        q = "limit=250" + (f"&type={event_type}" if event_type else "") + (f"&cursor={cursor}" if cursor else "")
        status, page = dev.call("GET", f"/v1/events?{q}", dev.token(org))
        assert status == 200, page
        ids += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def click(driver, element):
    """Clicks `element` scrolled to the middle of the window, clear of the
    sticky header, as a person would."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def submit(driver):
    """Submits the open dialog's form."""
    driver.find_element(By.CSS_SELECTOR, "dialog button[type=submit]").click()


def shown_ids(driver):
    return [r.get_attribute("data-id") for r in rows(driver, "event-row")]


def test_the_events_page_lists_events_and_shows_payloads_and_where_they_went(dev, receiver, browser):
    d = browser
    org = "events-org"
    receiver.answer(204)
    _, ep = dev.call("POST", "/v1/endpoints", dev.token(org), {
        "url": receiver.url("/billing"), "event_types": ["invoice.paid"], "description": "Billing"})
    # Data whose exact text JSON.parse would change: a long number, an escape.
    data = '{"invoice_id": "in_1001", "amount": 12345678901234567890, "note": "caf\\u00e9", "lines": [{"sku": "A-1", "qty": 2}], "meta": {}}'
    paid = publish(dev, org, "invoice.paid", json.loads(data))
    deliveries = delivered(dev, org, paid)
    assert [x["status"] for x in deliveries] == ["delivered"]
    # Enough events of another type for two pages (25 each).
    status, batch = dev.call("POST", "/v1/events/batch", dev.token(org), {
        "events": [{"type": ["lead_won", "meeting.booked", "task.completed"][i % 3], "data": {"n": i}} for i in range(30)]})
    assert status == 207 and all(r["status"] == 202 for r in batch["results"]), batch
    newest = all_event_ids(dev, org)
    assert len(newest) == 31

    open_portal(d, dev.portal_url(org))
    d.find_element(By.CSS_SELECTOR, '[data-nav="events"]').click()
    # Newest first, 25 a page; "Older" goes on where the page ended.
    assert wait(d, lambda d: shown_ids(d) == newest[:25])
    screenshot(d, "portal-events.png")
    click(d, wait(d, lambda d: d.find_element(By.ID, "events-older")))
    assert wait(d, lambda d: shown_ids(d) == newest[25:])
    assert paid == newest[-1]
    assert not d.find_elements(By.ID, "events-older")

    # The type filter shows only that type.
    click(d, d.find_element(By.LINK_TEXT, "← Newest"))
    wait(d, lambda d: shown_ids(d) == newest[:25])
    Select(d.find_element(By.ID, "event-type-filter")).select_by_value("invoice.paid")
    assert wait(d, lambda d: shown_ids(d) == [paid])
    assert "invoice.paid" in row_texts(d, "event-row")[0]

    # One event: its payload pretty-printed, every value exactly as published.
    rows(d, "event-row")[0].click()
    payload = wait(d, lambda d: d.find_element(By.ID, "event-payload"))
    text = payload.text
    assert "12345678901234567890" in text, text
    assert '"note": "caf\\u00e9"' in text
    assert '"qty": 2' in text and '"meta": {}' in text
    assert json.loads(text) == json.loads(data)
    assert "\n  " in text, "indented"
    # Where it went: the endpoint, the status, a link to the delivery.
    went = wait(d, lambda d: rows(d, "event-delivery-row"))
    assert len(went) == 1
    assert receiver.url("/billing") in went[0].text and "delivered" in went[0].text
    screenshot(d, "portal-event.png")

    # The delivery: the exact body the receiver got, and the headers.
    click(d, went[0].find_element(By.LINK_TEXT, "Delivery →"))
    body = wait(d, lambda d: d.find_element(By.ID, "request-body"))
    got = [(h, b) for h, b in receiver.received() if h.get("webhook-id") == paid]
    assert len(got) == 1
    headers, sent = got[0]
    assert body.text == sent.decode()
    shown = {}
    for r in rows(d, "request-header"):
        name, value = r.find_elements(By.TAG_NAME, "td")
        shown[name.text] = value.text
    assert shown["x-signature"] == MASKED and shown["webhook-signature"] == MASKED
    for name in ["content-type", "user-agent", "webhook-id", "webhook-timestamp",
                 "x-webhook-event", "x-webhook-delivery", "x-webhook-attempt"]:
        assert shown[name] == headers[name], name
    assert headers["x-signature"] not in d.page_source
    assert receiver.url("/billing") in d.find_element(By.ID, "delivery-endpoint").text
    screenshot(d, "portal-delivery.png", height=1100)
    # Pretty-printed on request, and back to the exact bytes.
    button(d, "Pretty-print").click()
    assert wait(d, lambda d: "\n" in d.find_element(By.ID, "request-body").text)
    assert json.loads(d.find_element(By.ID, "request-body").text) == json.loads(sent)
    button(d, "Show the exact bytes").click()
    assert wait(d, lambda d: d.find_element(By.ID, "request-body").text == sent.decode())

    # The same delivery from the endpoint's deliveries table.
    click(d, d.find_element(By.ID, "delivery-endpoint").find_element(By.TAG_NAME, "a"))
    click(d, wait(d, lambda d: (r := rows(d, "delivery-row")) and r[0]))
    click(d, wait(d, lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid="delivery-link"]')))
    assert wait(d, lambda d: d.find_element(By.ID, "request-body").text == sent.decode())
    assert d.current_url.endswith(f"#/deliveries/{deliveries[0]['id']}")
    assert ep["id"] in d.page_source

    # Another org's session finds neither the event nor the delivery.
    open_portal(d, dev.portal_url("events-other-org"))
    d.get(d.current_url.split("#")[0] + f"#/events/{paid}")
    assert wait(d, lambda d: "event not found" in d.page_source)
    d.get(d.current_url.split("#")[0] + f"#/deliveries/{deliveries[0]['id']}")
    assert wait(d, lambda d: "delivery not found" in d.page_source)
    assert "12345678901234567890" not in d.page_source


def test_an_endpoints_health_shows_in_the_listing_and_as_a_chart(dev, receiver, browser):
    d = browser
    org = "health-org"
    token = dev.token(org)
    _, ep = dev.call("POST", "/v1/endpoints", token, {"url": receiver.url("/health"), "event_types": ["*"]})
    # Three delivered, then one that fails both attempts.
    receiver.answer(204)
    for _ in range(3):
        status, sent = dev.call("POST", f"/v1/endpoints/{ep['id']}/test", token, {})
        assert status == 202
        assert [x["status"] for x in delivered(dev, org, sent["event_id"])] == ["delivered"]
    receiver.answer(500, b"no")
    status, sent = dev.call("POST", f"/v1/endpoints/{ep['id']}/test", token, {})
    assert status == 202
    delivered(dev, org, sent["event_id"], timeout=30)
    receiver.answer(204)
    deadline = time.time() + 30
    while True:
        _, stats = dev.call("GET", f"/v1/endpoints/{ep['id']}/stats", token)
        if (stats["delivered"], stats["dead_lettered"], stats["pending"]) == (3, 1, 0):
            break
        assert time.time() < deadline, stats
        time.sleep(0.2)

    d.get_log("browser")  # what earlier tests left in the log
    open_portal(d, dev.portal_url(org))
    # The listing's health: the last day's success rate and counts.
    cell = wait(d, lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid="endpoint-health"]'))
    assert wait(d, lambda d: "75%" in cell.text)
    assert "3 delivered · 1 failed" in cell.text
    screenshot(d, "portal-health-listing.png")

    # The endpoint's chart: one bar per window, from GET .../stats.
    rows(d, "endpoint-row")[0].click()
    chart = wait(d, lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid="stats-chart"]'))
    assert chart.tag_name == "svg"
    bars = chart.find_elements(By.CSS_SELECTOR, '[data-testid="stats-bar"]')
    assert [b.get_attribute("data-hours") for b in bars] == ["1", "24", "168"]
    for bar in bars:
        assert (bar.get_attribute("data-delivered"), bar.get_attribute("data-failed"), bar.get_attribute("data-pending")) == ("3", "1", "0")
        assert len(bar.find_elements(By.CSS_SELECTOR, "rect.ok")) == 1
        assert len(bar.find_elements(By.CSS_SELECTOR, "rect.bad")) == 1
        assert "75%" in bar.text
    # The delivered part is three times the failed one.
    ok = bars[1].find_element(By.CSS_SELECTOR, "rect.ok").get_attribute("width")
    bad = bars[1].find_element(By.CSS_SELECTOR, "rect.bad").get_attribute("width")
    assert abs(float(ok) - 3 * float(bad)) < 0.1
    assert "3 delivered, 1 failed" in chart.get_attribute("aria-label")
    assert "24 hours: " in d.find_element(By.CLASS_NAME, "legend").text
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    screenshot(d, "portal-health.png")
    # Drawn here: nothing loaded from elsewhere, no CSP violation.
    resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(r.startswith(dev.base) for r in resources), resources
    assert [e for e in d.get_log("browser") if "Content Security Policy" in e.get("message", "")] == []


def test_the_filter_field_shows_the_apis_error_next_to_it(dev, receiver, browser):
    d = browser
    org = "filter-org"
    token = dev.token(org)
    bad = {"data": {"amount": [{"numeric": [">", "a lot"]}]}}
    status, refused = dev.call("POST", "/v1/endpoints", token, {"url": receiver.url("/f"), "event_types": ["*"], "filter": bad})
    assert status == 400, refused
    message = refused["error"]["message"]
    assert message.startswith("filter.data.amount"), message

    open_portal(d, dev.portal_url(org))
    button(d, "Add your first endpoint").click()
    wait(d, lambda d: d.find_element(By.ID, "f-url")).send_keys(receiver.url("/eur"))
    d.find_element(By.CSS_SELECTOR, 'input[name=type][value="invoice.paid"]').click()
    area = d.find_element(By.ID, "f-filter")
    # Not JSON: said by the field, nothing sent.
    area.send_keys('{"data": ')
    submit(d)
    error = d.find_element(By.ID, "f-filter-error")
    assert wait(d, lambda d: error.is_displayed() and "not valid JSON" in error.text)
    # A pattern the API refuses: its 400 is shown by the field.
    area.clear()
    area.send_keys(json.dumps(bad))
    submit(d)
    assert wait(d, lambda d: error.is_displayed() and error.text == message)
    assert area.get_attribute("aria-invalid") == "true"
    assert d.switch_to.active_element == area
    assert d.find_elements(By.CSS_SELECTOR, "form .error[role=alert]")[0].is_displayed() is False
    screenshot(d, "portal-filter-error.png")
    _, listing = dev.call("GET", "/v1/endpoints", token)
    assert listing["data"] == []

    # A valid pattern: the endpoint is made with it, and only what it
    # matches is delivered.
    area.clear()
    area.send_keys(json.dumps({"data": {"currency": ["eur"]}}))
    submit(d)
    wait(d, lambda d: "/endpoints/ep_" in d.current_url)
    shown = wait(d, lambda d: d.find_element(By.ID, "endpoint-filter"))
    assert json.loads(shown.text) == {"data": {"currency": ["eur"]}}
    receiver.answer(204)
    usd = publish(dev, org, "invoice.paid", {"currency": "usd"})
    eur = publish(dev, org, "invoice.paid", {"currency": "eur"})
    assert [x["status"] for x in delivered(dev, org, eur)] == ["delivered"]
    _, event = dev.call("GET", f"/v1/events/{usd}", token)
    assert event["deliveries"] == []

    # Emptying the field removes the filter.
    button(d, "Edit").click()
    area = wait(d, lambda d: d.find_element(By.ID, "f-filter"))
    assert json.loads(area.get_attribute("value")) == {"data": {"currency": ["eur"]}}
    area.clear()
    submit(d)
    assert wait(d, lambda d: "None: every event of its types" in d.page_source)
    _, listing = dev.call("GET", "/v1/endpoints", token)
    assert listing["data"][0]["filter"] is None


# The API answers these creates itself, in the page: the form's requests are
# checked against CONTRACT section 12 whether or not the API has `headers`
# and `auth` yet.
FAKE_API = """
  window.__sent = [];
  window.__answers = arguments[0];
  const real = window.fetch;
  window.fetch = async (url, init) => {
    if (init && init.method === 'POST' && String(url).endsWith('/endpoints')) {
      window.__sent.push(JSON.parse(init.body));
      const message = window.__answers.shift();
      return new Response(JSON.stringify({error: {code: 'invalid_request', message}}),
        {status: 400, headers: {'Content-Type': 'application/json'}});
    }
    return real(url, init);
  };
"""


def test_the_headers_and_auth_fields_send_the_contracts_shape_and_show_errors_by_field(dev, receiver, browser):
    d = browser
    org = "headers-org"
    open_portal(d, dev.portal_url(org))
    button(d, "Add your first endpoint").click()
    wait(d, lambda d: d.find_element(By.ID, "f-url")).send_keys(receiver.url("/hdr"))
    d.find_element(By.CSS_SELECTOR, 'input[name=type][value="invoice.paid"]').click()
    d.find_element(By.CSS_SELECTOR, "details.more summary").click()

    # A header without a value: said by the headers field, nothing sent.
    button(d, "Add header").click()
    names = lambda: d.find_elements(By.CSS_SELECTOR, 'input[name="header-name"]')  # noqa: E731
    values = lambda: d.find_elements(By.CSS_SELECTOR, 'input[name="header-value"]')  # noqa: E731
    names()[0].send_keys("X-Tenant")
    submit(d)
    headers_error = d.find_element(By.ID, "f-headers-error")
    assert wait(d, lambda d: headers_error.is_displayed() and "headers.X-Tenant: enter its value" in headers_error.text)
    assert d.switch_to.active_element == values()[0]
    values()[0].send_keys("acme")
    button(d, "Add header").click()
    names()[1].send_keys("Host")
    values()[1].send_keys("evil.example")

    # Basic auth without a password: said by the auth field.
    Select(d.find_element(By.ID, "f-auth")).select_by_value("basic")
    assert not d.find_element(By.ID, "f-auth-token-url").is_displayed()
    d.find_element(By.ID, "f-auth-username").send_keys("hooks")
    submit(d)
    auth_error = d.find_element(By.ID, "f-auth-error")
    assert wait(d, lambda d: auth_error.is_displayed() and auth_error.text.startswith("auth.password: required"))
    assert not headers_error.is_displayed()
    d.find_element(By.ID, "f-auth-password").send_keys("s3cret")

    # What the form sends is the contract's shape; the API's 400 naming a
    # header shows by the headers field, one naming auth by the auth field.
    d.execute_script(FAKE_API, [
        "headers.Host: set by HTTP; it cannot be a custom header",
        "auth.token_url: must be an https URL",
    ])
    submit(d)
    assert wait(d, lambda d: headers_error.is_displayed() and headers_error.text.startswith("headers.Host: set by HTTP"))
    sent = d.execute_script("return window.__sent")
    assert sent[0] == {
        "url": receiver.url("/hdr"), "event_types": ["invoice.paid"], "description": "",
        "headers": {"X-Tenant": "acme", "Host": "evil.example"},
        "auth": {"type": "basic", "username": "hooks", "password": "s3cret"},
    }, sent
    screenshot(d, "portal-headers-auth.png", height=1300)
    # OAuth2 client credentials.
    Select(d.find_element(By.ID, "f-auth")).select_by_value("oauth2_client_credentials")
    assert not d.find_element(By.ID, "f-auth-username").is_displayed()
    d.find_element(By.ID, "f-auth-token-url").send_keys("http://auth.example.com/token")
    d.find_element(By.ID, "f-auth-client-id").send_keys("client-1")
    d.find_element(By.ID, "f-auth-client-secret").send_keys("cs")
    submit(d)
    assert wait(d, lambda d: auth_error.is_displayed() and auth_error.text == "auth.token_url: must be an https URL")
    assert not headers_error.is_displayed()
    assert d.switch_to.active_element == d.find_element(By.ID, "f-auth")
    sent = d.execute_script("return window.__sent")
    assert sent[1]["auth"] == {"type": "oauth2_client_credentials", "token_url": "http://auth.example.com/token",
                               "client_id": "client-1", "client_secret": "cs"}, sent
    # Nothing reached the API.
    _, listing = dev.call("GET", "/v1/endpoints", dev.token(org))
    assert listing["data"] == []

    # Untouched, neither field is sent: an endpoint is made as before.
    d.refresh()
    button(d, "Add your first endpoint").click()
    wait(d, lambda d: d.find_element(By.ID, "f-url")).send_keys(receiver.url("/plain"))
    d.find_element(By.CSS_SELECTOR, 'input[name=type][value="lead_won"]').click()
    d.find_element(By.CSS_SELECTOR, "details.more summary").click()
    button(d, "Add header").click()
    submit(d)
    wait(d, lambda d: "/endpoints/ep_" in d.current_url)
    _, listing = dev.call("GET", "/v1/endpoints", dev.token(org))
    assert [e["url"] for e in listing["data"]] == [receiver.url("/plain")]
