"""The web view in a real browser: Debian's Chromium, headless, driven by Playwright.

Three daemons; node a works an issue through the scripted model (after Antennae's consensus) while
its pages are open. Without a reload, the tasks page shows the task move through its stages and
the Antennae page shows the conversation appear. Each page is saved as a screenshot, in
$BZZZ_SCREENSHOTS if set (the README's are made so), else in the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.github import FakeGitHub
from tests.fakes.model import ScriptedModel, Slow, call
from tests.integration.github_world import REPO
from tests.integration.harness import Cluster, Daemon, wait_until
from tests.integration.test_agent import agent_settings, seed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the rest keep it off a network it cannot reach.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("BZZZ_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def works_slowly() -> list:
    """A good model's steps, each taking a moment, so that the stages can be watched."""
    steps = [
        call("read_file", path="calc.py"),
        call("edit_file", path="calc.py", old_text="return a - b", new_text="return a + b"),
        call("run", command="python3 -m unittest -q"),
        call("finish", summary="add() subtracted; it adds now. The test passes."),
    ]
    return [Slow(0.7, step) for step in steps]


def start(cluster: Cluster, project: FakeGitHub, model: ScriptedModel) -> list[Daemon]:
    antennae = "\n[antennae]\nrequire_consensus = true\nreview_window = 2\n"
    worker = agent_settings(project, model)
    worker["extra"] += antennae
    daemons = [
        cluster.add("a", http=True, capabilities=["general", "review"], **worker),
        cluster.add("b", capabilities=["review"], extra=antennae),
        cluster.add("c", capabilities=["review"], extra=antennae),
    ]
    Cluster.start_together(daemons)
    wait_until(
        lambda: all(len(d.status()["connected"]) == 2 for d in daemons), 20, "a meshed cluster"
    )
    return daemons


def live(page: Any, url: str) -> None:
    """Open `url` with its event stream connected, and mark the document: a reload would
    lose the mark."""
    page.goto(url)
    page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    page.evaluate("window.bzzzMark = 'not reloaded'")


def not_reloaded(page: Any) -> bool:
    return page.evaluate("window.bzzzMark") == "not reloaded"


def test_the_pages_follow_a_task_and_its_conversation_live(
    cluster: Cluster, fake: FakeGitHub, tmp_path: Path, browser: Any, shots: Path
):
    seed(fake, tmp_path)
    with ScriptedModel(
        lambda request: works_slowly()[
            sum(1 for m in request["messages"] if m["role"] == "assistant")
        ]
    ) as model:
        a, b, c = start(cluster, fake, model)
        url = a.wait_web()
        context = browser.new_context(viewport=WIDE)
        tasks, talk = context.new_page(), context.new_page()
        live(tasks, url + "/tasks")
        live(talk, url + "/antennae")

        number = fake.create_issue(
            REPO, "add() is wrong", body="2 + 3 should be 5.", labels=["bzzz-task"]
        )
        key = f"{REPO}#{number}"
        row = f'tr[data-task="{key}"]'
        # The stages, as the row shows them: each one awaited on the open page.
        seen = []
        for stage in ("claimed", "running", "done"):
            try:
                tasks.wait_for_selector(f'{row}[data-stage="{stage}"]', timeout=60_000)
            except Exception:
                print(tasks.inner_html("main"))
                print(a.log()[-8000:])
                raise
            seen.append(stage)
        assert seen == ["claimed", "running", "done"] and not_reloaded(tasks)
        tasks.screenshot(path=str(shots / "tasks.png"), full_page=True)

        talk.wait_for_selector(f'tr[data-conversation="{key}"]', timeout=10_000)
        assert not_reloaded(talk), "the conversation appeared without a reload"

    # The task: every stage on its timeline, the agent's transcript with its tool calls.
    page = context.new_page()
    owner_repo = REPO
    page.goto(f"{url}/tasks/{owner_repo}/{number}")
    stages = page.eval_on_selector_all("#timeline li", "items => items.map(i => i.dataset.stage)")
    for stage in ("announced", "claimed", "running", "reporting", "done"):
        assert stage in stages, f"{stage} on the timeline: {stages}"
    assert page.locator('#transcript li[data-kind="tool"]').count() >= 3
    (pull,) = fake.pulls(REPO)
    href = page.locator("p.links a", has_text="pull request").get_attribute("href")
    assert href and href.endswith(f"/pull/{pull['number']}"), "our own pull request, linked"
    assert "python3 -m unittest -q" in page.inner_text("#transcript")
    page.screenshot(path=str(shots / "task.png"), full_page=True)

    # The conversation as a thread: a's proposal, then the consensus, each with its author.
    page.goto(f"{url}/antennae/{owner_repo}/{number}")
    kinds = page.eval_on_selector_all("#thread li", "items => items.map(i => i.dataset.kind)")
    assert kinds[0] == "proposal" and "consensus" in kinds, kinds
    assert page.locator(f'#thread li[data-kind="proposal"][data-from="{a.peer_id}"]').count()
    page.screenshot(path=str(shots / "conversation.png"), full_page=True)

    # The cluster: three nodes in the table and in the mesh graph.
    page.goto(url + "/")
    for daemon in (a, b, c):
        page.wait_for_selector(f'#cluster tr[data-peer="{daemon.peer_id}"]', timeout=10_000)
    assert page.locator("#mesh g.node").count() == 3
    page.screenshot(path=str(shots / "cluster.png"), full_page=True)

    page.goto(url + "/audit")
    assert page.locator("#audit tr[data-type]").count() > 0
    page.wait_for_selector("#verify[data-ok]", timeout=10_000)
    page.screenshot(path=str(shots / "audit.png"), full_page=True)
    page.goto(url + "/github")
    page.screenshot(path=str(shots / "github.png"), full_page=True)
    context.close()


def test_the_view_works_without_javascript_by_keyboard_and_at_phone_width(
    cluster: Cluster, browser: Any, shots: Path
):
    a = cluster.add("a", http=True)
    a.start()
    url = a.wait_web()

    static = browser.new_context(viewport=WIDE, java_script_enabled=False)
    page = static.new_page()
    page.goto(url + "/")
    assert page.locator(f'#cluster tr[data-peer="{a.peer_id}"]').count() == 1
    assert page.get_attribute("#conn", "data-state") == "static", "no script ran"
    static.close()

    phone = browser.new_context(viewport=PHONE, is_mobile=True)
    page = phone.new_page()
    for path in ("/", "/tasks", "/antennae", "/audit", "/github"):
        page.goto(url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width} px wide on a phone"
    page.goto(url + "/")
    page.screenshot(path=str(shots / "cluster-phone.png"), full_page=True)
    phone.close()

    keys = browser.new_context(viewport=WIDE)
    page = keys.new_page()
    page.goto(url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "#live", "skip link"
    page.keyboard.press("Tab")
    first = page.evaluate("document.activeElement.textContent")
    assert first.strip(), "then the navigation"
    keys.close()
