"""The live page's option controls (issue 16, point 7) in Debian Chromium: they reach the server's session.

Checking a box sends ``set_options``; the page keeps the server's ``options`` reply in
``window.faceportLive.options``, so what is asserted is what the server now applies.
"""

from __future__ import annotations

from typing import Any

from tests.realtime.test_browser import _wait, browser, camera_file  # noqa: F401 - fixtures


def test_option_controls_set_the_sessions_options(browser: Any, make_live_server: Any) -> None:  # noqa: F811
    server = make_live_server()
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.goto(server.url + "/")
    page.wait_for_selector("#connection[data-state=connected]", timeout=30_000)
    # the page sends its options on connect: all off, blend 80
    assert _wait(page, "window.faceportLive.options") == {"mouth_mask": False, "face_enhancer": False,
                                                          "face_enhancer_blend": 80, "many_faces": False}
    page.check("#opt-mouth-mask")
    page.check("#opt-many-faces")
    page.evaluate("""() => { const r = document.querySelector('#opt-blend'); r.value = '35';
                             r.dispatchEvent(new Event('change')); }""")
    page.check("#opt-enhancer")
    options = _wait(page, "window.faceportLive.options.face_enhancer && window.faceportLive.options")
    assert options == {"mouth_mask": True, "face_enhancer": True, "face_enhancer_blend": 35, "many_faces": True}
    assert not problems, problems
