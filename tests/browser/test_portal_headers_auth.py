"""The endpoint form's headers and auth against the real API: what the form
saves is sent on every delivery, values never shown again, and the API's
own 400 for a refused header shows by the headers field."""

import base64

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from test_portal import button, open_portal, wait
from test_portal_events import MASKED, delivered, publish, submit


def test_headers_and_basic_auth_saved_in_the_form_reach_the_receiver(dev, receiver, browser):
    d = browser
    org = "headers-real-org"
    open_portal(d, dev.portal_url(org))
    button(d, "Add your first endpoint").click()
    wait(d, lambda d: d.find_element(By.ID, "f-url")).send_keys(receiver.url("/hdr-real"))
    d.find_element(By.CSS_SELECTOR, 'input[name=type][value="invoice.paid"]').click()
    d.find_element(By.CSS_SELECTOR, "details.more summary").click()
    names = lambda: d.find_elements(By.CSS_SELECTOR, 'input[name="header-name"]')  # noqa: E731
    values = lambda: d.find_elements(By.CSS_SELECTOR, 'input[name="header-value"]')  # noqa: E731

    # The API refuses a header HTTP owns: its 400 shows by the headers field.
    button(d, "Add header").click()
    names()[0].send_keys("Host")
    values()[0].send_keys("evil.example")
    submit(d)
    headers_error = d.find_element(By.ID, "f-headers-error")
    assert wait(d, lambda d: headers_error.is_displayed() and "Host" in headers_error.text)
    _, listing = dev.call("GET", "/v1/endpoints", dev.token(org))
    assert listing["data"] == []

    names()[0].clear()
    names()[0].send_keys("X-Tenant")
    values()[0].clear()
    values()[0].send_keys("acme")
    Select(d.find_element(By.ID, "f-auth")).select_by_value("basic")
    d.find_element(By.ID, "f-auth-username").send_keys("hooks")
    d.find_element(By.ID, "f-auth-password").send_keys("s3cret")
    submit(d)
    wait(d, lambda d: "/endpoints/ep_" in d.current_url)

    _, listing = dev.call("GET", "/v1/endpoints", dev.token(org))
    [ep] = listing["data"]
    assert ep["headers"] == {"X-Tenant": MASKED}, ep
    assert "s3cret" not in str(ep) and "acme" not in str(ep)

    event_id = publish(dev, org, "invoice.paid", {"n": 1})
    delivered(dev, org, event_id)
    got = [h for h, _ in receiver.received() if h.get("x-tenant") == "acme"]
    assert got, "the custom header reached the receiver"
    assert got[-1]["authorization"] == "Basic " + base64.b64encode(b"hooks:s3cret").decode()
